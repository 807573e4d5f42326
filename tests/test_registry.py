"""The generic registry: decorator, lazy targets, duplicates, did-you-mean, plugins."""

from __future__ import annotations

import json
import textwrap

import pytest

from attnbench.errors import UnknownNameError, UserError
from attnbench.registry import Registry
from tests.helpers import ROOT, run_cli


def test_register_get_and_names():
    reg: Registry = Registry("widget")

    @reg.register("alpha")
    class Alpha:
        pass

    reg.add("beta", 42)
    assert reg.get("alpha") is Alpha
    assert reg.get("beta") == 42
    assert reg.names() == ["alpha", "beta"]
    assert "alpha" in reg and "gamma" not in reg


def test_duplicate_name_refused():
    reg: Registry = Registry("widget")
    reg.add("alpha", 1)
    with pytest.raises(UserError, match="already registered"):
        reg.add("alpha", 2)


def test_unknown_name_suggests_close_match():
    reg: Registry = Registry("kernel")
    reg.add("flex", 1)
    reg.add("naive", 2)
    with pytest.raises(UnknownNameError) as info:
        reg.get("flexx")
    assert "did you mean 'flex'" in str(info.value)
    assert "known: flex, naive" in str(info.value)


def test_aliases_people_type_find_the_kernel_they_mean():
    from attnbench.kernels import KERNELS

    def suggested(name: str) -> str:
        with pytest.raises(UnknownNameError) as info:
            KERNELS.get(name)
        return str(info.value).split("did you mean ", 1)[1].split("?")[0]

    assert suggested("flash_attn2") == "'fa2'"  # not 'flashinfer', the closest spelling
    assert suggested("Flash-Attn-2") == "'fa2'"
    assert suggested("fa") == "'fa2' or 'fa3'"
    assert suggested("cudnn") == "'sdpa_cudnn' or 'te_fused'"
    assert "'sdpa_flash'" in suggested("flash") and "'fa2'" in suggested("flash")
    assert suggested("flexx") == "'flex'"  # plain spelling mistakes as before


def test_a_kernel_alias_in_a_suite_filter_names_the_kernel():
    from attnbench.suite import load_suite

    longctx = load_suite(ROOT / "suites" / "longctx.yaml", profile="none", cuda_available=False)
    with pytest.raises(UserError, match=r"did you mean 'sdpa_flash'\?"):
        longctx.filter(kernels=["flash"])  # fa2 and fa3 are not in the suite; sdpa_flash is
    with pytest.raises(UserError, match=r"kernel 'flash_attn2' is 'fa2', which suite 'longctx' does not run"):
        longctx.filter(kernels=["flash_attn2"])


def test_lazy_target_imported_on_first_get():
    reg: Registry = Registry("thing", materialize=lambda obj: obj() if isinstance(obj, type) else obj)
    reg.add("ordered", "collections:OrderedDict")
    assert reg._entries["ordered"] == "collections:OrderedDict"
    value = reg.get("ordered")
    assert type(value).__name__ == "OrderedDict"
    with pytest.raises(UserError, match="no attribute"):
        reg.add("bad", "collections:NoSuchThing")
        reg.get("bad")


def test_builtin_registries_hold_what_the_issue_names():
    from attnbench.kernels import KERNELS
    from attnbench.masks import MASKS

    assert {"naive", "sdpa", "sdpa_math", "sdpa_flash", "sdpa_efficient", "sdpa_cudnn", "flex"} <= set(KERNELS.names())
    assert len(MASKS.names()) == 15


def test_plugins_from_environment_variable_register_kernel_and_mask():
    result = run_cli("list", "--json", env={"ATTNBENCH_PLUGINS": "tests.plugins.wrong_kernel,tests.plugins.extra_mask"})
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert "wrong_scale" in [k["name"] for k in data["kernels"]]
    assert "lookback" in [m["name"] for m in data["masks"]]


def test_broken_plugin_is_one_line_error():
    result = run_cli("list", env={"ATTNBENCH_PLUGINS": "tests.plugins.no_such_module"})
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "no_such_module" in result.stderr


def test_plugins_from_entry_points(tmp_path):
    """A distribution that declares `attnbench.plugins` is loaded without editing attnbench."""
    (tmp_path / "thirdparty_kernel.py").write_text(
        textwrap.dedent(
            """
            from attnbench.kernels import register_kernel
            from attnbench.kernels.builtin.naive import NaiveKernel

            @register_kernel("third_party_naive")
            class ThirdParty(NaiveKernel):
                name = "third_party_naive"
                description = "from an entry point"
            """
        )
    )
    dist = tmp_path / "thirdparty_kernel-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: thirdparty-kernel\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[attnbench.plugins]\nthirdparty = thirdparty_kernel\n")
    result = run_cli("list", "--json", env={"PYTHONPATH": f"{tmp_path}"}, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "third_party_naive" in [k["name"] for k in json.loads(result.stdout)["kernels"]]
