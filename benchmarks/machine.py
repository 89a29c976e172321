"""What a figure was measured on: CPU, cores, memory, GPU and library versions."""

from __future__ import annotations

import os
import platform
import re
import resource
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGES = (
    "torch", "transformers", "numpy", "river", "faust-streaming", "aiokafka", "rocksdict",
    "scikit-learn",
)  # fmt: skip
KAFKA_POM = Path(__file__).resolve().parents[1] / "deploy" / "kafka" / "pom.xml"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _memory_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / (1 << 20)
    except OSError:
        pass
    return float("nan")


def _gpu() -> str | None:
    try:
        import torch

        if torch.cuda.is_available():
            return torch.cuda.get_device_name(0)
    except Exception:  # a broken CUDA install is reported as no GPU
        return None
    return None


def _kafka_version() -> str | None:
    try:
        text = KAFKA_POM.read_text()
    except OSError:
        return None
    found = re.search(r"<kafka\.version>(\d[^<]*)</kafka\.version>", text)
    return found.group(1) if found else None


def describe_machine() -> dict[str, Any]:
    """The machine and software a benchmark ran on, for the report's header."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    try:
        java = subprocess.run(
            ["java", "-version"], capture_output=True, text=True, timeout=30
        ).stderr.splitlines()[0]
    except (OSError, IndexError, subprocess.SubprocessError):
        java = None
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "memory_gib": round(_memory_gib(), 1),
        "gpu": _gpu(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": versions,
        "kafka": _kafka_version(),
        "java": java,
    }


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far, MiB (Linux ``ru_maxrss`` is KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mib() -> float:
    """Resident memory of this process now, MiB (``VmRSS`` of ``/proc/self/status``)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")
