"""Last of the tier: the node goes away and the host is as it was before it came.

The kubelet did write the global sysctls it wants -- into the files bind-mounted
over them inside the namespace -- while the host's values, the fixed paths it
and containerd use, the host's links and iptables rules did not change, and
teardown leaves no process, mount or cgroup.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from e2e.node.cluster import HostSnapshot, Node

pytestmark = pytest.mark.e2e


def test_teardown_leaves_the_host_as_it_was(node: Node, host_before: HostSnapshot) -> None:
    # The kubelet's writes landed in the namespace's copies, not on the host.
    inside = (node.state / "sysctl" / "vm.overcommit_memory").read_text().strip()
    assert inside == "1", "the kubelet did not set vm.overcommit_memory inside the namespace"
    netns = node.netns
    assert netns
    assert node.close() == []
    after = HostSnapshot.take("nebula-id-node-*")
    assert after.sysctls == host_before.sysctls
    assert after.paths == host_before.paths
    # Ours only: another run's node may come and go meanwhile.
    assert not [c for c in after.cgroups if c.endswith("/" + node.cgroup_name)]
    assert after.links == host_before.links
    assert after.iptables == host_before.iptables
    assert str(node.state) not in Path("/proc/self/mountinfo").read_text()
    still = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.readlink(entry / "ns" / "net") == netns:
                    still.append(entry.name)
            except OSError:
                continue
    assert still == []
