"""{{ cookiecutter.project_name }}: {{ cookiecutter.use_case.replace('_', ' ') }} model, pipeline and service."""

__version__ = "0.1.0"
