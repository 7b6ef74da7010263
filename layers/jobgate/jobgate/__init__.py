"""jobgate: run the stages of a data-pipeline CLI as jobs on AWS serverless."""

__version__ = "0.1.0"
