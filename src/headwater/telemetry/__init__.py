"""Job telemetry: Prometheus series a node observes and optional OpenTelemetry traces."""
