"""The Pulumi program's components: the topology laid onto one Kubernetes cluster per site.

`program.deploy(topo)` composes them; `infra/__main__.py` calls it under the Pulumi CLI and
`mockrun.run(topo)` runs it in-process under Pulumi's own mocks (render, policy check, tests).
"""
