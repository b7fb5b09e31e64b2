"""The local sandbox: real Kubernetes control planes and the real Pulumi engine, from Go modules."""
