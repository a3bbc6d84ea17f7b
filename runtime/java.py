"""Which Java the jobs run on, and how its JVM starts (collector, log settings, the AOT cache).

    python -m runtime.java --check-java    # says which Java the jobs will use (`make java`)
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import os
import re
import shlex
import shutil
import subprocess
import sys

MIN_JAVA_MAJOR = 17
JAVA_INSTALL_HINT = "install it with: apt-get install openjdk-17-jre-headless (Debian/Ubuntu)"
# The Javas Spark 4.3 runs on ("Spark runs on Java 17/21/25"); the newest runs the pipeline fastest
# (docs/performance.md).
SUPPORTED_JAVA_MAJORS = (17, 21, 25)
JVM_DIRECTORY = "/usr/lib/jvm"  # where Debian's, Ubuntu's, Fedora's and Adoptium's packages install Javas


class JavaNotFoundError(RuntimeError):
    pass


def _version(text: str) -> tuple[int, ...] | None:
    """(major, minor, ...) from a version string such as "25.0.3" or Java 8's "1.8.0_292"."""
    numbers = [int(part) for part in re.findall(r"\d+", text)]
    if not numbers:
        return None
    return tuple(numbers[1:]) if numbers[0] == 1 and len(numbers) > 1 else tuple(numbers)


def java_executable() -> str:
    """The ``java`` that Spark will launch: JAVA_HOME's, else the one on PATH."""
    java_home = os.environ.get("JAVA_HOME")
    java = os.path.join(java_home, "bin", "java") if java_home else shutil.which("java")
    if not java or not os.path.exists(java):
        raise JavaNotFoundError(f"Java {MIN_JAVA_MAJOR}+ is required by Spark but was not found; {JAVA_INSTALL_HINT}")
    return java


def java_major_version() -> int:
    """The major version of the Java that Spark will launch (JAVA_HOME first, then PATH)."""
    java = java_executable()
    result = subprocess.run([java, "-version"], capture_output=True, text=True, check=False)
    match = re.search(r'version "([\d._]+)', result.stderr + result.stdout)
    version = _version(match.group(1)) if match else None
    if not version:
        raise JavaNotFoundError(f"could not read the version of {java}; {JAVA_INSTALL_HINT}")
    return version[0]


def java_release(home: str) -> dict[str, str]:
    """The settings of a Java home's ``release`` file (JAVA_VERSION, JAVA_RUNTIME_VERSION, ...); empty without one."""
    try:
        with open(os.path.join(home, "release"), encoding="utf-8", errors="replace") as lines:
            return dict(re.findall(r'^(\w+)="([^"]*)"', lines.read(), re.M))
    except OSError:
        return {}


def installed_javas(directory: str = JVM_DIRECTORY) -> dict[str, tuple[int, ...]]:
    """Java homes in ``directory`` and their versions, read from each one's ``release`` file."""
    found = {}
    for home in sorted(glob.glob(os.path.join(directory, "*"))):
        if not os.path.isfile(os.path.join(home, "bin", "java")):
            continue
        version = _version(java_release(home).get("JAVA_VERSION", ""))
        if version:
            found[home] = version
    return found


def choose_java(directory: str = JVM_DIRECTORY) -> int:
    """Choose the Java for the JVMs this process starts, check it, and return its major version.

    ``JAVA_HOME`` wins. Without it, when ``directory`` holds a Java that Spark supports
    and that is newer than the one on PATH (or there is none on PATH), ``JAVA_HOME`` is
    set to it, so that every JVM started from here (the local Spark driver, and the
    ``spark-class`` and ``spark-submit`` the cluster test runs) uses the same Java.
    """
    if not os.environ.get("JAVA_HOME"):
        supported = {home: version for home, version in installed_javas(directory).items() if version[0] in SUPPORTED_JAVA_MAJORS}
        if supported:
            newest = max(supported, key=supported.get)
            try:
                on_path = java_major_version()
            except JavaNotFoundError:
                on_path = None
            if on_path is None or on_path not in SUPPORTED_JAVA_MAJORS or on_path < supported[newest][0]:
                os.environ["JAVA_HOME"] = newest
    return check_java()


def check_java() -> int:
    major = java_major_version()
    if major < MIN_JAVA_MAJOR:
        raise JavaNotFoundError(f"Spark 4 needs Java {MIN_JAVA_MAJOR}+, found Java {major}; {JAVA_INSTALL_HINT}")
    return major


# The throughput collector, not Java's default G1: Spark's tasks allocate fast and keep little, and
# G1's concurrent marking and heavier write barriers cost more than they save on a few cores
# (docs/performance.md). The log settings keep to warnings and errors, without Spark's start-up
# notices: a clear error is the first thing an analyst reads. The compiler directives leave Spark's
# per-query generated classes to C1 (see the file); the JVM says so on start-up, on stderr with the
# rest of what it says, so that a job's standard output stays its own.
RUNTIME_DIRECTORY = os.path.dirname(os.path.abspath(__file__))
LOCAL_LOG_SETTINGS = os.path.join(RUNTIME_DIRECTORY, "log4j2.properties")
LOCAL_COMPILER_DIRECTIVES = os.path.join(RUNTIME_DIRECTORY, "compiler_directives.json")
LOCAL_JAVA_OPTIONS = (f"-XX:+UseParallelGC -Dlog4j2.configurationFile={shlex.quote(LOCAL_LOG_SETTINGS)} -XX:+UnlockDiagnosticVMOptions "
                      f"-XX:CompilerDirectivesFile={shlex.quote(LOCAL_COMPILER_DIRECTIVES)} -XX:+DisplayVMOutputToStderr")

# A JVM started with -XX:AOTCache finds the classes an earlier training run used already loaded and
# linked, and the profiles of its hot methods (JEP 483, 515; Java 25's -XX:AOTCacheOutput makes one,
# JEP 514), so it starts seconds sooner. `make jvm-cache` trains it (devtools.jvm_cache).
JVM_CACHE_JAVA_MAJOR = 25


def jvm_cache_directory() -> str:
    """``SEGREC_JVM_CACHE_DIR``, else segrec's directory in the user's cache (``XDG_CACHE_HOME``, ``~/.cache``)."""
    user_cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.environ.get("SEGREC_JVM_CACHE_DIR") or os.path.join(user_cache, "segrec")


def jvm_cache_file() -> str | None:
    """Where the AOT cache of the Java and Spark that local sessions launch belongs (made or not); None when
    that Java cannot use one (before Java 25, or without a ``release`` file that says its build).

    A cache holds one JVM build's view of one class path, so the name carries both (the jars' newest
    change included): another Java or another Spark installation, or the same one reinstalled, looks
    for a cache of its own instead of one the JVM would refuse with errors on every start.
    """
    import pyspark

    java = os.path.realpath(java_executable())
    build = java_release(os.path.dirname(os.path.dirname(java))).get("JAVA_RUNTIME_VERSION", "")
    version = _version(build)
    if not version or version[0] < JVM_CACHE_JAVA_MAJOR:
        return None
    spark_home = os.path.realpath(os.environ.get("SPARK_HOME") or os.path.dirname(pyspark.__file__))
    jars = os.path.join(spark_home, "jars")
    changed = max((entry.stat().st_mtime_ns for entry in os.scandir(jars) if entry.name.endswith(".jar")), default=0) \
        if os.path.isdir(jars) else 0
    digest = hashlib.sha256("\0".join((java, build, spark_home, str(changed))).encode()).hexdigest()[:12]
    return os.path.join(jvm_cache_directory(), f"spark-{pyspark.__version__}-java-{build}-{digest}.aot")


def trained_jvm_cache() -> str | None:
    """The AOT cache local sessions start from: ``jvm_cache_file()`` once `make jvm-cache` has trained it."""
    cache = jvm_cache_file()
    return cache if cache and os.path.isfile(cache) else None


def local_java_options() -> str:
    """The local driver JVM's options: the collector, the log settings, and the AOT cache once trained for this Java and Spark."""
    cache = trained_jvm_cache()
    return f"{LOCAL_JAVA_OPTIONS} -XX:AOTCache={shlex.quote(cache)}" if cache else LOCAL_JAVA_OPTIONS



def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Check that this machine can run segrec's Spark jobs.")
    parser.add_argument("--check-java", action="store_true", help="check for Java 17+, say which the jobs will use, and exit")
    args = parser.parse_args(argv)
    if args.check_java:
        try:
            major = choose_java()
            print(f"Java {major} found: {java_executable()}")
            if jvm_cache_file():
                cache = trained_jvm_cache()
                print(f"JVM cache: {cache}" if cache else "no JVM cache yet: `make jvm-cache` trains one (devtools/jvm_cache.py)")
        except JavaNotFoundError as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
