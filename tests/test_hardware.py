"""The dtype follows the machine: ``"auto"`` is bfloat16 only where it is native, and every chapter's
resolved configuration picks float32 on a CPU without native bfloat16."""

from __future__ import annotations

import re

import pytest

from alignment_dynamics import config, hardware, models

AVX2_EPYC = "processor : 0\nvendor_id : AuthenticAMD\nmodel name : AMD EPYC 7B13\nflags : fpu sse2 avx fma avx2\n"
XEON_BF16 = ("processor : 0\nvendor_id : GenuineIntel\nmodel name : Intel(R) Xeon(R) Processor\n"
             "flags : fpu avx2 fma avx512f avx512_bf16 avx512_fp16\n")
XEON_AMX = "processor : 0\nmodel name : Intel(R) Xeon(R) Platinum 8480\nflags : fpu avx2 avx512f amx_tile amx_bf16\n"
APPLE = ""  # no /proc/cpuinfo


@pytest.fixture
def cpu(monkeypatch):
    """Pretend to be a given CPU: sets /proc/cpuinfo's text, clears the overrides and ISA caps."""
    for var in (hardware.ENV_DTYPE, "ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA"):
        monkeypatch.delenv(var, raising=False)

    def set_cpu(text: str) -> None:
        monkeypatch.setattr(hardware, "cpuinfo_text", lambda: text)
    return set_cpu


ZEN4_BF16 = ("processor : 0\nvendor_id : AuthenticAMD\nmodel name : AMD EPYC\n"
             "flags : fpu avx2 fma avx512f avx512_bf16 avx512_vnni\n")


@pytest.mark.parametrize("text, native, speedup, expected", [
    (AVX2_EPYC, False, None, "float32"), (APPLE, False, None, "float32"),
    (XEON_BF16, True, 0.64, "float32"),  # measured: bf16 embedding 17.0 vs 26.4 prompts/s in fp32
    (ZEN4_BF16, True, 1.9, "bfloat16"),  # measured: 12.7 vs 6.7 prompts/s
    (XEON_BF16, True, hardware.BF16_MIN_SPEEDUP - 0.01, "float32"),
    (XEON_AMX, True, None, "bfloat16")])
def test_auto_is_bfloat16_only_where_native_and_faster(cpu, monkeypatch, text, native, speedup, expected):
    """AVX512-BF16 without AMX is native; whether it is faster is measured (here: mocked), never assumed.
    Without native bf16 or with AMX, nothing is measured."""
    def probe(**_):
        if speedup is None:
            raise AssertionError("the probe must not run on this CPU")
        return speedup
    monkeypatch.setattr(hardware, "bf16_speedup", probe)
    cpu(text)
    assert hardware.auto_dtype("cpu") == expected
    assert hardware.resolve_dtype("auto", "cpu") == expected
    assert models.dtype_name("auto", "cpu") == expected
    assert hardware.native_bf16("cpu")[0] == native
    fast, why = hardware.fast_bf16("cpu")
    assert fast == (expected == "bfloat16") and why


def test_an_isa_cap_makes_bf16_emulated_so_auto_is_float32(cpu, monkeypatch):
    cpu(XEON_AMX)
    assert hardware.auto_dtype("cpu") == "bfloat16"
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert hardware.auto_dtype("cpu") == "float32"
    assert "ONEDNN_MAX_CPU_ISA" in hardware.native_bf16("cpu")[1]
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA")
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "avx2")
    assert hardware.auto_dtype("cpu") == "float32"


def test_the_override_wins_and_a_bad_one_is_a_clear_error(cpu, monkeypatch):
    cpu(AVX2_EPYC)
    monkeypatch.setenv(hardware.ENV_DTYPE, "bf16")
    assert hardware.auto_dtype("cpu") == "bfloat16"
    monkeypatch.setenv(hardware.ENV_DTYPE, "float64")
    with pytest.raises(hardware.DtypeError, match=r"ALIGNMENT_DYNAMICS_DTYPE='float64' is not a dtype; valid"):
        hardware.auto_dtype("cpu")


def test_explicit_dtypes_and_unknown_names(cpu):
    cpu(AVX2_EPYC)
    assert hardware.resolve_dtype("fp32") == "float32"
    assert hardware.resolve_dtype("bfloat16") == "bfloat16"  # an explicit choice is honoured
    assert hardware.resolve_dtype(None) == "float32"
    with pytest.raises(hardware.DtypeError, match="unknown dtype 'bfloat61'.*valid: 'auto'"):
        hardware.resolve_dtype("bfloat61")
    with pytest.raises(config.ConfigError, match="unknown dtype"):
        models.resolve_dtype("float64")


def _every_config():
    for slug in sorted(config.CHAPTERS):
        for profile in config.PROFILES:
            yield slug, profile, config.resolve(slug, profile)


def test_every_chapter_resolves_float32_on_a_cpu_without_native_bf16(cpu):
    cpu(AVX2_EPYC)
    with_dtype = [(s, p) for s, p, cfg in _every_config() if "dtype" in cfg]
    assert {s for s, _ in with_dtype} >= {"distinguishability", "training_dynamics", "prioritization"}
    for slug, profile, cfg in _every_config():
        if "dtype" in cfg:
            assert cfg.dtype == "float32", (slug, profile)
    cpu(XEON_AMX)
    assert all(cfg.dtype == "bfloat16" for _, _, cfg in _every_config() if "dtype" in cfg)


def test_no_chapter_or_setting_hard_codes_a_forward_pass_dtype(root):
    for spec in config.CHAPTERS.values():
        for p in spec.params:
            if p.name == "DTYPE":
                assert set(p.values.values()) == {"auto"}, spec.slug
        if "dtype" in spec.settings:
            assert set(spec.settings["dtype"].values()) == {"auto"}, spec.slug
    for md in (root / "book").glob("*.md"):
        text = md.read_text()
        assert not re.search(r"""(DTYPE\s*=|dtype\s*=)\s*["'](bfloat16|bf16)["']""", text), md.name


def test_summary_names_the_cpu_its_flags_and_the_dtype(cpu):
    cpu(AVX2_EPYC)
    s = hardware.summary("cpu")
    assert s["cpu"] == "AMD EPYC 7B13" and s["flags"]["avx2"] and not s["flags"]["avx512_bf16"]
    assert s["auto_dtype"] == "float32" and s["native_bf16"] is False and s["torch_threads"] >= 1


def test_the_bf16_probe_is_measured_once_per_machine_and_survives_a_corrupt_record(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv("ALIGNMENT_DYNAMICS_CACHE", str(tmp_path / "content"))  # not where the record goes
    monkeypatch.setattr(hardware, "_PROBED", {})
    calls = []

    def timed(**_):
        calls.append(1)
        return 0.3, 0.1  # float32 3x slower
    monkeypatch.setattr(hardware, "_time_blocks", timed)
    assert hardware.bf16_speedup() == pytest.approx(3.0)
    assert hardware.bf16_speedup() == pytest.approx(3.0) and len(calls) == 1  # the record is reused
    path = hardware._probe_path()
    assert path.parent == tmp_path / "alignment_dynamics" / "hardware" and path.exists()
    monkeypatch.setattr(hardware, "_PROBED", {})  # a new process reads the record
    assert hardware.bf16_speedup() == pytest.approx(3.0) and len(calls) == 1
    for bad in ("{not json", '{"speedup": NaN}', '{"speedup": -1}'):  # corrupt: measured again, not a crash
        monkeypatch.setattr(hardware, "_PROBED", {})
        path.write_text(bad)
        assert hardware.bf16_speedup() == pytest.approx(3.0)
    assert len(calls) == 4


def test_the_probe_times_both_dtypes():
    t32, t16 = hardware._time_blocks(rows=2, tokens=8, repeats=1)
    assert t32 > 0 and t16 > 0
