"""The bridge's own kernel subshell (JEP 91), for the targets that opt in.

Comms to the targets named in ``subshell_targets`` are served by a
subshell of the kernel that the bridge creates at start (if the kernel's ``kernel_info_reply``
lists the ``kernel subshells`` feature) and deletes at close: their handlers then run in the
subshell's thread and answer while a cell keeps the main shell busy. The ``comm_open`` goes to
the subshell too, because ipykernel sends a comm's messages to the shell that the comm last
published from (``Comm._reply_subshell_for``), whatever the header says; a comm opened on the
main shell would stay there. Opt-in per target, because those handlers then run concurrently
with the kernel's cells, which breaks code that is not thread-safe.
"""

from __future__ import annotations

import logging
from collections.abc import Collection

from .channels import KernelChannels
from .errors import KernelFault
from .protocol import (
    CREATE_SUBSHELL_REQUEST,
    DELETE_SUBSHELL_REQUEST,
    KERNEL_INFO_REQUEST,
    SUBSHELLS_FEATURE,
)


class Subshell:
    """A subshell of one kernel serving comms to ``targets``, once :meth:`create` made it."""

    def __init__(self, targets: Collection[str], kernel_id: str, log: logging.Logger) -> None:
        self.targets = frozenset(targets)
        self.kernel_id = kernel_id
        self.log = log
        self.id: str | None = None

    async def create(self, channels: KernelChannels, timeout: float) -> None:
        """Make the subshell, if a target opted in and the kernel has subshells; otherwise
        (or if the kernel fails to) the main shell serves every comm."""
        if not self.targets:
            return
        try:
            info = await channels.request(KERNEL_INFO_REQUEST, {}, timeout)
            if SUBSHELLS_FEATURE not in info["content"].get("supported_features", ()):
                self.log.info("Kernel %s has no subshells (main shell used)", self.kernel_id)
                return
            reply = await channels.control_request(CREATE_SUBSHELL_REQUEST, {}, timeout)
        except KernelFault as e:
            self.log.warning("Kernel %s: no subshell (%s)", self.kernel_id, e)
            return
        subshell_id = reply["content"].get("subshell_id")
        if reply["content"].get("status") != "ok" or not isinstance(subshell_id, str):
            self.log.warning("Kernel %s created no subshell: %s", self.kernel_id, reply["content"])
            return
        self.id = subshell_id

    def serving(self, target_name: str) -> str | None:
        """The subshell's id if it serves comms to ``target_name``."""
        return self.id if target_name in self.targets else None

    def forget(self) -> None:
        """The kernel went away, and its subshells with it."""
        self.id = None

    def delete(self, channels: KernelChannels) -> None:
        """Ask the kernel to end the subshell, whose thread would outlive the bridge."""
        if self.id is not None:
            channels.send_control(DELETE_SUBSHELL_REQUEST, {"subshell_id": self.id})
            self.id = None
