"""The seccomp filter of the sandboxed kernel, as the classic BPF program bubblewrap loads.

A notebook never needs the system calls refused here, and each of them widens what a kernel can
reach of the host's own kernel: new namespaces (a user namespace gives back every capability
inside it), another process's namespaces, the kernel keyring, eBPF, io_uring (which bypasses
seccomp for the calls it performs), userfaultfd, perf events and ptrace. They fail with EPERM.
clone3 fails with ENOSYS, so that the C library falls back to clone, whose flags a filter can
read. A call made under any other architecture (i386 or x32 calls from an x86_64 process) kills
the process: those tables would need filters of their own.

Written by hand with `struct` (a few dozen instructions) rather than with libseccomp's Python
binding, which is not installable from PyPI as a wheel.
"""

from __future__ import annotations

import errno
import functools
import struct

AUDIT_ARCH_X86_64 = 0xC000003E
AUDIT_ARCH_AARCH64 = 0xC00000B7
_X32_BIT = 0x40000000  # x32 calls on x86_64 carry this bit in their number

# BPF opcodes and seccomp return values (linux/filter.h, linux/seccomp.h).
_LD_ABS = 0x20  # BPF_LD | BPF_W | BPF_ABS
_JEQ = 0x15  # BPF_JMP | BPF_JEQ | BPF_K
_JGE = 0x35  # BPF_JMP | BPF_JGE | BPF_K
_JSET = 0x45  # BPF_JMP | BPF_JSET | BPF_K
_RET = 0x06  # BPF_RET | BPF_K
_ALLOW = 0x7FFF0000
_KILL = 0x80000000  # SECCOMP_RET_KILL_PROCESS
_ERRNO = 0x00050000
_NR, _ARCH, _ARG0 = 0, 4, 16  # offsets in struct seccomp_data (args are little-endian here)

# Namespace flags of clone and unshare (CLONE_NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID,
# NEWNET); unshare also knows CLONE_NEWTIME, whose bit is part of clone's exit signal.
_CLONE_NEW = 0x7E020000
_UNSHARE_NEW = _CLONE_NEW | 0x80

# name: (x86_64 number, aarch64 number)
REFUSED = {
    "setns": (308, 268), "keyctl": (250, 219), "add_key": (248, 217),
    "request_key": (249, 218), "bpf": (321, 280), "io_uring_setup": (425, 425),
    "io_uring_enter": (426, 426), "io_uring_register": (427, 427), "userfaultfd": (323, 282),
    "perf_event_open": (298, 241), "ptrace": (101, 117),
}
_CLONE, _UNSHARE, _CLONE3 = (56, 220), (272, 97), (435, 435)

Instruction = tuple[int, int | str, int | str, int]  # code, jump if true, jump if false, k


def _arch_block(label: str, arch: int) -> list[Instruction | str]:
    """The rules for one architecture; its index into each (x86_64, aarch64) pair is ARCH."""
    block: list[Instruction | str] = [label, (_LD_ABS, 0, 0, _NR)]
    if arch == 0:
        block.append((_JGE, "kill", 0, _X32_BIT))
    block.append((_JEQ, "enosys", 0, _CLONE3[arch]))
    block += [(_JEQ, "eperm", 0, numbers[arch]) for numbers in REFUSED.values()]
    block += [
        (_JEQ, f"{label}-clone", 0, _CLONE[arch]),
        (_JEQ, f"{label}-unshare", "allow", _UNSHARE[arch]),
        f"{label}-clone", (_LD_ABS, 0, 0, _ARG0), (_JSET, "eperm", "allow", _CLONE_NEW),
        f"{label}-unshare", (_LD_ABS, 0, 0, _ARG0), (_JSET, "eperm", "allow", _UNSHARE_NEW),
    ]
    return block


def _assemble(lines: list[Instruction | str]) -> bytes:
    """Resolve labels to relative jumps and pack each sock_filter."""
    where: dict[str, int] = {}
    code: list[Instruction] = []
    for line in lines:
        if isinstance(line, str):
            where[line] = len(code)
        else:
            code.append(line)

    def offset(target: int | str, index: int) -> int:
        if isinstance(target, int):
            return target
        jump = where[target] - index - 1
        if not 0 <= jump <= 255:
            raise ValueError(f"seccomp filter: jump to {target} out of range")
        return jump

    return b"".join(struct.pack("=HBBI", op, offset(jt, i), offset(jf, i), k)
                    for i, (op, jt, jf, k) in enumerate(code))


@functools.cache
def program() -> bytes:
    """The compiled filter: an array of struct sock_filter, for `bwrap --seccomp FD`."""
    lines: list[Instruction | str] = [
        (_LD_ABS, 0, 0, _ARCH),
        (_JEQ, "x86_64", 0, AUDIT_ARCH_X86_64),
        (_JEQ, "aarch64", "kill", AUDIT_ARCH_AARCH64),
        *_arch_block("x86_64", 0),
        *_arch_block("aarch64", 1),
        "allow", (_RET, 0, 0, _ALLOW),
        "eperm", (_RET, 0, 0, _ERRNO | errno.EPERM),
        "enosys", (_RET, 0, 0, _ERRNO | errno.ENOSYS),
        "kill", (_RET, 0, 0, _KILL),
    ]
    return _assemble(lines)
