"""rankpipe's pipeline package: CLI, config, data contract, dataset adapters, runner, tracking."""

__version__ = "0.1.0"
