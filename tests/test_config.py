import datetime as dt
import os
import shlex
import stat
import subprocess
from pathlib import Path

import pytest

from jobs import pipeline
from runtime import cli
from runtime import java as java_helpers
from runtime.config import ConfigError, Settings, build, load_config_file
from transactions.ingest import IngestConfig


def test_flags_override_the_config_file_which_overrides_defaults(tmp_path):
    (tmp_path / "segrec.toml").write_text(
        '[ingest]\ncolumns = { customer_id = "cust" }\nmax_quarantine_share = 0.02\nnon_product_codes = ["POST"]\n'
    )
    args = pipeline.build_parser().parse_args(["--input", "a", "--output", "b", "--columns", "item_id=sku", "--max-quarantine-share", "0.1",
                                               "--config", str(tmp_path / "segrec.toml")])
    config = cli.resolve_settings(args, app_name="test").ingest

    assert config.columns == {"customer_id": "cust", "item_id": "sku"}
    assert config.max_quarantine_share == 0.1
    assert config.non_product_codes == ("POST",)
    assert config.strict is False


def test_json_config_files_work_too(tmp_path):
    (tmp_path / "segrec.json").write_text('{"ingest": {"strict": true}}')
    assert build(IngestConfig, load_config_file(str(tmp_path / "segrec.json"))["ingest"]).strict is True


def test_a_typo_in_the_config_file_is_an_error_not_a_silent_default(tmp_path):
    with pytest.raises(ConfigError, match="unknown IngestConfig setting 'max_quarantine_shar'"):
        build(IngestConfig, {"max_quarantine_shar": 0.1})
    (tmp_path / "typo.toml").write_text("[routing]\nvalidaton_days = 30\n")
    args = pipeline.build_parser().parse_args(["--input", "a", "--output", "b", "--config", str(tmp_path / "typo.toml")])
    with pytest.raises(ConfigError, match=r"unknown \[routing\] setting 'validaton_days' \(known: .*validation_days"):
        cli.resolve_settings(args, app_name="test")


def test_a_run_has_one_settings_object_defaults_then_file_then_flags(tmp_path):
    (tmp_path / "run.toml").write_text('[routing]\nk = 5\nserved_n = 20\n[tuning]\nbudget_seconds = 30\n[spark]\ndriver_memory = "6g"\n')
    args = pipeline.build_parser().parse_args(["--input", "a", "--output", "b", "--config", str(tmp_path / "run.toml"),
                                               "--tune-budget", "0", "--k", "4", "--reuse-routes", "6", "--master", "local[2]"])
    settings = cli.resolve_settings(args, app_name="segrec-test")
    assert isinstance(settings, Settings)
    assert (settings.routing.k, settings.routing.served_n, settings.tuning.budget_seconds) == (5, 20, 0.0)
    assert (settings.segments.k, settings.train.reuse_routes_days) == (4, 6)
    assert (settings.spark.app_name, settings.spark.master, settings.spark.driver_memory) == ("segrec-test", "local[2]", "6g")
    assert settings.clv == Settings().clv  # untouched tables keep their defaults


def test_a_misspelled_section_is_an_error_naming_it(tmp_path):
    (tmp_path / "typo.toml").write_text("[rouitng]\nserved_n = 20\n")
    with pytest.raises(ConfigError, match=r"typo.toml: unknown section \[rouitng\] \(sections: spark, ingest, .*routing"):
        load_config_file(str(tmp_path / "typo.toml"))


@pytest.mark.parametrize("profile", sorted((Path(__file__).resolve().parent.parent / "jobs" / "profiles").glob("*.toml")))
def test_every_shipped_profile_resolves_to_a_run(profile):
    assert isinstance(Settings.resolve(load_config_file(str(profile))), Settings)


def test_a_broken_config_file_names_the_file(tmp_path):
    (tmp_path / "bad.toml").write_text("[ingest\n")
    with pytest.raises(ConfigError, match="bad.toml is not valid TOML"):
        load_config_file(str(tmp_path / "bad.toml"))


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config_file(str(tmp_path / "none.toml"))


def test_dates_in_config_are_parsed():
    from dataclasses import dataclass

    @dataclass(frozen=True)
    class Dated:
        as_of: dt.date | None = None

    assert build(Dated, {"as_of": "2011-09-09"}).as_of == dt.date(2011, 9, 9)
    with pytest.raises(ConfigError, match="YYYY-MM-DD"):
        build(Dated, {"as_of": "9/9/2011"})


def fake_java(tmp_path, version_line, release: str | None = None):
    """A Java home whose java prints ``version_line``; with ``release``, the JAVA_VERSION its release file gives (and a build of it)."""
    java = tmp_path / "bin" / "java"
    java.parent.mkdir(parents=True)
    java.write_text(f"#!/bin/sh\necho '{version_line}' >&2\n")
    java.chmod(java.stat().st_mode | stat.S_IEXEC)
    if release:
        (tmp_path / "release").write_text(f'IMPLEMENTOR="Test"\nJAVA_VERSION="{release}"\nJAVA_RUNTIME_VERSION="{release}+9-LTS"\n')
    return tmp_path


@pytest.fixture
def javas(tmp_path, monkeypatch):
    """A JVM directory with Javas 17, 21, 25 and 26, a fake PATH, and no JAVA_HOME (all restored afterwards)."""
    directory = tmp_path / "jvm"
    for name, version in [("jdk-17", "17.0.9"), ("jdk-21", "21.0.4"), ("jdk-25", "25.0.3"), ("jdk-26", "26.0.1")]:
        fake_java(directory / name, f'openjdk version "{version}"', release=version)
    (directory / "not-a-java").mkdir()
    # Set before it is removed, so that a JAVA_HOME chosen by the test is undone too (delenv of an unset one records nothing).
    monkeypatch.setenv("JAVA_HOME", "")
    monkeypatch.delenv("JAVA_HOME")
    monkeypatch.setenv("PATH", str(tmp_path / "path" / "bin"))
    return directory


def put_java_on_path(javas, version_line):
    fake_java(javas.parent / "path", version_line)


def test_the_newest_java_spark_supports_is_chosen_over_an_older_one_on_path(javas):
    put_java_on_path(javas, 'openjdk version "17.0.15" 2025-04-15')

    assert java_helpers.choose_java(str(javas)) == 25
    assert os.environ["JAVA_HOME"] == str(javas / "jdk-25")  # 26 is newer, but Spark 4.3 does not support it


def test_java_home_wins_over_the_newest_java(javas, monkeypatch):
    monkeypatch.setenv("JAVA_HOME", str(javas / "jdk-17"))

    assert java_helpers.choose_java(str(javas)) == 17
    assert os.environ["JAVA_HOME"] == str(javas / "jdk-17")


def test_the_java_on_path_is_kept_when_none_is_newer(javas):
    put_java_on_path(javas, 'openjdk version "25.0.1" 2025-10-21')

    assert java_helpers.choose_java(str(javas)) == 25
    assert "JAVA_HOME" not in os.environ


def test_a_java_is_found_without_one_on_path(javas):
    assert java_helpers.choose_java(str(javas)) == 25
    assert os.environ["JAVA_HOME"] == str(javas / "jdk-25")


def test_without_a_java_anywhere_the_error_says_how_to_install_one(javas):
    with pytest.raises(java_helpers.JavaNotFoundError, match="was not found; install it with"):
        java_helpers.choose_java(str(javas / "not-a-java"))


def test_old_java_is_reported_with_how_to_install_a_new_one(tmp_path, monkeypatch):
    monkeypatch.setenv("JAVA_HOME", str(fake_java(tmp_path, 'openjdk version "11.0.2" 2019-01-15')))
    with pytest.raises(java_helpers.JavaNotFoundError, match="found Java 11; install it with: apt-get install openjdk-17"):
        java_helpers.check_java()


def test_java_8_style_versions_are_read(tmp_path, monkeypatch):
    monkeypatch.setenv("JAVA_HOME", str(fake_java(tmp_path, 'java version "1.8.0_292"')))
    assert java_helpers.java_major_version() == 8


def test_missing_java_is_reported(tmp_path, monkeypatch):
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "nowhere"))
    with pytest.raises(java_helpers.JavaNotFoundError, match="was not found"):
        java_helpers.check_java()


def test_this_machine_has_java_17_or_newer():
    assert java_helpers.check_java() >= 17


@pytest.mark.parametrize("home", sorted(java_helpers.installed_javas()) or [pytest.param(None, marks=pytest.mark.skip("no Java in /usr/lib/jvm"))])
def test_every_installed_java_starts_with_the_local_options_and_applies_the_compiler_directive(home):
    # A directives file one Java cannot parse stops that JVM; the suite's Spark runs on the newest Java only.
    result = subprocess.run([os.path.join(home, "bin", "java"), *shlex.split(java_helpers.LOCAL_JAVA_OPTIONS), "-version"],
                            capture_output=True, text=True, check=False)

    assert result.returncode == 0, result.stderr
    assert "1 compiler directives added" in result.stderr and result.stdout == ""


def test_the_jvm_cache_belongs_to_one_java_build_and_is_used_once_it_exists(javas, tmp_path, monkeypatch):
    monkeypatch.setenv("SEGREC_JVM_CACHE_DIR", str(tmp_path / "caches"))
    monkeypatch.setenv("JAVA_HOME", str(javas / "jdk-25"))
    cache = java_helpers.jvm_cache_file()

    assert os.path.dirname(cache) == str(tmp_path / "caches") and "java-25.0.3+9-LTS" in os.path.basename(cache)
    assert java_helpers.local_java_options() == java_helpers.LOCAL_JAVA_OPTIONS  # not made yet
    os.makedirs(os.path.dirname(cache))
    open(cache, "wb").close()
    assert java_helpers.local_java_options() == f"{java_helpers.LOCAL_JAVA_OPTIONS} -XX:AOTCache={cache}"

    fake_java(tmp_path / "jdk-25-update", 'openjdk version "25.0.4"', release="25.0.4")
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "jdk-25-update"))
    assert java_helpers.jvm_cache_file() not in (None, cache)  # another build never takes this one's cache
    monkeypatch.setenv("JAVA_HOME", str(javas / "jdk-21"))
    assert java_helpers.jvm_cache_file() is None  # Java 21 has no AOT cache
    assert java_helpers.local_java_options() == java_helpers.LOCAL_JAVA_OPTIONS
