"""Portfolio scoring (``make score``): every record of a file or directory, with the service's scorer."""
