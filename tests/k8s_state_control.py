"""A chaoslib control for tests/test_k8s_driver.py: after every action, the clusters' API state
(what a run can leave behind) is recorded under the action's name, so a test can check each
action's effect on the API rather than on what the action claims."""

snapshots: dict[str, dict] = {}


def after_activity_control(context, state=None, configuration=None, secrets=None, **_):
    if context.get("type") != "action":
        return
    from test_k8s_driver import cluster_state

    from twinsite.chaos.drivers.k8s import K8sDriver
    snapshots[context["name"]] = cluster_state(K8sDriver(configuration))
