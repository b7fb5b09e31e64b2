"""Time the Pulumi program under mocks, `twinsite render` and `twinsite policy check` for the lab
stack (goals: render <= 5 s, policy check <= 5 s)."""

import tempfile
import time
from pathlib import Path


def main() -> None:
    t0 = time.monotonic()
    from twinsite import policycheck, render, topology
    from twinsite.k8s import mockrun
    t_import = time.monotonic() - t0

    topo = topology.load_stack("lab")
    t = time.monotonic()
    resources = mockrun.run(topo)
    t_first = time.monotonic() - t
    t = time.monotonic()
    mockrun.run(topo)
    t_again = time.monotonic() - t

    with tempfile.TemporaryDirectory() as out:
        t = time.monotonic()
        assert render.main(["--stack", "lab", "--out", out]) == 0
        t_render = time.monotonic() - t
        n = len(list(Path(out).glob("*/*.yaml")))

    t = time.monotonic()
    violations = policycheck.evaluate(topo)
    t_policy = time.monotonic() - t
    print(f"imports (pulumi, pulumi_kubernetes): {t_import:.2f}s")
    print(f"program under mocks: {len(resources)} resources, first run {t_first:.2f}s, "
          f"again {t_again:.2f}s")
    print(f"render lab (program + {n} manifests + strict validation): {t_render:.2f}s "
          f"(goal 5 s, ratio {t_render / 5:.2f})")
    print(f"policy check lab (program + 13 rules): {t_policy:.2f}s, {len(violations)} violations "
          f"(goal 5 s, ratio {t_policy / 5:.2f})")


if __name__ == "__main__":
    main()
