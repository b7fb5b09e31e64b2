"""Property-based fuzzing of the talk gateway's HTTP API with schemathesis (`make fuzz`)."""
