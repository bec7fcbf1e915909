"""The Kafka broker's Java side: a JDK 17+, and the jars resolved from Maven Central.

The jars come from ``tools/kafka/pom.xml`` and are cached per version in
``<cache_dir>/kafka-<version>/libs``; an existing cache is used as is.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from handrail_dev.errors import KafkaJarsError, ServiceStartError, ToolNotFoundError
from handrail_dev.process import require_tool
from handrail_dev.settings import DevSettings

# The repository's tools/kafka: pom.xml and the log4j2 configs (libs/handrail_dev -> repo root).
TOOLS_DIR = Path(__file__).resolve().parents[2] / "tools" / "kafka"

# A cold ~/.m2 downloads ~45 MB; slow mirrors need minutes, not seconds.
_MVN_TIMEOUT_S = 900.0
_MIN_JAVA = 17  # Kafka 4.x brokers and tools need Java 17+ (KIP-750 / KIP-1013).
_RESOLVED_MARKER = ".resolved"
_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")


def tools_file(name: str) -> Path:
    """A file of ``tools/kafka``, or an error saying the launcher needs the source checkout."""
    path = TOOLS_DIR / name
    if not path.is_file():
        raise ServiceStartError(f"{path} is missing: `handrail dev up` runs from a source checkout of Handrail")
    return path


def require_java() -> str:
    """The ``java`` executable, checked to be 17 or newer."""
    java = require_tool("java", "install a JDK 17+ (e.g. `apt-get install -y openjdk-17-jre-headless`)")
    out = subprocess.run(  # noqa: S603 - fixed argv
        [java, "-version"], capture_output=True, text=True, timeout=60, check=False
    )
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    if match is not None:
        major = int(match[1]) if match[1] != "1" else int(match[2] or 0)  # "1.8.0" means Java 8
        if major < _MIN_JAVA:
            raise ToolNotFoundError(
                f"java {major} found at {java}, but Kafka 4.x needs Java {_MIN_JAVA}+: install a JDK 17+ "
                "(e.g. `apt-get install -y openjdk-17-jre-headless`) and put it first on PATH"
            )
    return java


def _maven_errors(output: str) -> str:
    """Maven's ``[ERROR]`` lines without its generic "re-run with -e / see the wiki" advice."""
    output = _ANSI_ESCAPE.sub("", output)  # Debian's Maven 3.8 colours even with -B -Dstyle.color=never
    errors = [line for line in output.splitlines() if line.startswith("[ERROR]") and line.strip() != "[ERROR]"]
    advice = ("To see the full", "Re-run Maven", "For more information", "[Help")
    kept = [line for line in errors if not line.removeprefix("[ERROR] ").startswith(advice)]
    return "\n".join(kept[:10] or output.strip().splitlines()[-15:])


def kafka_libs(settings: DevSettings) -> Path:
    """The folder of broker jars for ``settings.kafka_version``, resolving it with Maven on first use."""
    home = settings.cache_dir.expanduser() / f"kafka-{settings.kafka_version}"
    libs = home / "libs"
    if (home / _RESOLVED_MARKER).is_file() and any(libs.glob("kafka_2.13-*.jar")):
        return libs
    mvn = require_tool("mvn", "install Maven 3.6.3+ (e.g. `apt-get install -y maven`)")
    pom = tools_file("pom.xml")
    home.mkdir(parents=True, exist_ok=True)
    staging = home / f"libs.partial-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    argv = [
        mvn, "-q", "-B", "-Dstyle.color=never", "-f", str(pom), "dependency:copy-dependencies",
        f"-Dkafka.version={settings.kafka_version}",
        "-DincludeScope=runtime",
        f"-DoutputDirectory={staging}",
    ]  # fmt: skip
    try:
        out = subprocess.run(  # noqa: S603 - argv is built here
            argv, capture_output=True, text=True, timeout=_MVN_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise KafkaJarsError(f"`{' '.join(argv)}` did not finish within {_MVN_TIMEOUT_S:.0f} s") from exc
    if out.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        raise KafkaJarsError(
            f"Maven could not resolve Kafka {settings.kafka_version} (exit {out.returncode}):\n"
            f"{_maven_errors(out.stdout + out.stderr)}\n"
            f"command: {' '.join(argv)}"
        )
    shutil.rmtree(libs, ignore_errors=True)
    staging.rename(libs)
    (home / _RESOLVED_MARKER).write_text(f"{settings.kafka_version}\n")
    return libs
