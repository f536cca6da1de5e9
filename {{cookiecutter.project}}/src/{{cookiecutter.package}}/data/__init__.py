"""Data stages: generate (synthetic), prepare (pseudonymise, erase, split), validate (Great Expectations)."""
