"""rankpipe's pipeline package: CLI, config, data contract, dataset adapters, runner, tracking."""


