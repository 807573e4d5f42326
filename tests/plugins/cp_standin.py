"""A test-only CP method `standin` (loaded via ATTNBENCH_PLUGINS): supports everything, and
its ranks run `tests.cp_standins:by_mode` (the launcher tests set ATTNBENCH_CP_WORKER).

Parameter `mode` picks the stand-in behaviour: ok, hang, exit3, abort, raises."""

from attnbench.cp import register_cp_method


class StandIn:
    name = "standin"
    description = "launcher test stand-in (test plugin)"
    params = {"mode": "ok, hang, exit3, abort or raises"}

    def unsupported_reason(self, case):
        mode = case.cp.params.get("mode", "ok") if case.cp else "ok"
        if mode == "unsupported":
            return "stand-in says no"
        return None

    def describe(self, device):
        return {"name": self.name, "description": self.description, "available": True, "reason": None,
                "params": dict(self.params)}


register_cp_method("standin")(StandIn)
