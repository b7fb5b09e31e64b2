"""The twinsite policy pack for `pulumi preview --policy-pack policies`.

Constructing a PolicyPack starts the analyzer's gRPC server, so it happens only when Pulumi runs
this file; `twinsite policy check` imports `twinsite_policies.POLICIES` instead.
"""

from pulumi_policy import EnforcementLevel, PolicyPack

from twinsite_policies import POLICIES

if __name__ == "__main__":
    PolicyPack(
        name="twinsite-dual-site",
        enforcement_level=EnforcementLevel.ADVISORY,  # each policy sets its own level
        policies=POLICIES,
    )
