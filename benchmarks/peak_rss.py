"""Peak RSS of this process above a settled state (Linux): what bench_train and bench_head report."""

import ctypes
import gc


def _status_mib(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field}")


def settle() -> float:
    """Collect garbage, return glibc's free heap to the OS (malloc_trim), reset the peak RSS (VmHWM)
    to the current RSS through /proc/self/clear_refs; the RSS now, in MiB."""
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    base = _status_mib("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return base


def peak_above(base: float) -> float:
    """The peak RSS since ``settle()`` above the RSS it returned, in MiB."""
    return _status_mib("VmHWM") - base
