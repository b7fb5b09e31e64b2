"""`pulumi up -s STACK`: the dual-site deployment, one Kubernetes cluster per site.

All the logic lives in `twinsite.k8s` so that `twinsite render` and `twinsite policy check` run
the very same program under Pulumi's mocks.
"""

from twinsite.k8s.program import deploy, topology_from_pulumi_config

deploy(topology_from_pulumi_config())
