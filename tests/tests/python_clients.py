"""The official Python clients, unchanged, against fake-hcloud and fake-scaleway.

Usage: python_clients.py hcloud URL      (URL: http://ADDR/v1)
       python_clients.py scaleway URL    (URL: http://ADDR, the Instance API under /instance/v1)

Drives each through catalog, create, list, firewall / security group and delete calls and
checks what comes back. Prints one line per step; exits non-zero with a clear message on
the first failure (a wrong value, or any exception the client raises).
"""
import sys
import traceback
import warnings

# The clients warn about their own deprecated fields (which the fakes still send, as the
# real APIs do); the warnings are not failures.
warnings.simplefilter("ignore", DeprecationWarning)


class Failed(Exception):
    pass


def check(cond, what):
    if not cond:
        raise Failed(what)
    print(f"ok: {what}", flush=True)


def run_hcloud(url):
    import hcloud
    from hcloud import Client
    from hcloud.firewalls import FirewallResource, FirewallRule
    from hcloud.images import Image
    from hcloud.locations import Location
    from hcloud.server_types import ServerType

    print(f"hcloud {hcloud.__version__} against {url}", flush=True)
    client = Client(token="any-token", api_endpoint=url, poll_interval=0.05, timeout=10)

    types = client.server_types.get_all()
    cx22 = next((t for t in types if t.name == "cx22"), None)
    check(cx22 is not None, "server_types.get_all() lists cx22")
    check(
        all(l.available is not None and l.recommended is not None for l in cx22.locations),
        "server type locations[] carry available and recommended",
    )
    check(
        any(l.location.name == "fsn1" and l.available for l in cx22.locations),
        "cx22 is available in fsn1",
    )
    check(client.server_types.get_by_name("cpx11").cores == 2, "server_types.get_by_name")
    locations = client.locations.get_all()
    check(any(l.name == "fsn1" for l in locations), "locations.get_all() lists fsn1")
    check(client.locations.get_by_name("hel1").country == "FI", "locations.get_by_name")
    images = client.images.get_all(type="system", architecture="x86")
    check(any(i.name == "debian-12" for i in images), "images.get_all(type=system) lists debian-12")
    check(client.images.get_by_name_and_architecture("ubuntu-24.04", "x86") is not None,
          "images.get_by_name_and_architecture")

    rules = [
        FirewallRule(direction="in", protocol="tcp", port="22",
                     source_ips=["203.0.113.7/32"], description="ssh from the ingress"),
        FirewallRule(direction="in", protocol="tcp", port="8443",
                     source_ips=["203.0.113.7/32", "2001:db8:0:0::1/128"]),
    ]
    created = client.firewalls.create(name="py-fw", rules=rules, labels={"app": "py"})
    fw = created.firewall
    check(fw.id and fw.name == "py-fw", "firewalls.create")
    check([r.port for r in fw.rules] == ["22", "8443"], "firewall rules kept in order")
    check(fw.rules[1].source_ips == ["203.0.113.7/32", "2001:db8::1/128"],
          "IPv6 CIDRs come back in canonical form")
    check(fw.rules[0].destination_ips == [], "destination_ips is [] on an inbound rule")

    try:
        client.firewalls.create(name="py-bad", rules=[
            FirewallRule(direction="in", protocol="tcp", source_ips=["0.0.0.0/0"])])
        raise Failed("a tcp rule without a port was accepted")
    except hcloud.APIException as e:
        check(e.code == "invalid_input", "a tcp rule without port: invalid_input")

    created = client.servers.create(
        name="py-1",
        server_type=ServerType(name="cx22"),
        image=Image(name="ubuntu-24.04"),
        location=Location(name="fsn1"),
        labels={"dayshift-cluster": "py", "role": "gpu"},
        firewalls=[fw],
    )
    created.action.wait_until_finished()
    for a in created.next_actions:
        a.wait_until_finished()
    server = client.servers.get_by_id(created.server.id)
    check(server.status == "running", "servers.create: the server runs")
    check([f.firewall.id for f in server.public_net.firewalls] == [fw.id],
          "server public_net.firewalls names the firewall")
    check(server.public_net.firewalls[0].status == "applied", "firewall status is applied")
    other = client.servers.create(name="py-2", server_type=ServerType(name="cx22"),
                                  image=Image(name="ubuntu-24.04"), labels={"x": "y"})
    check(other.server.public_net.firewalls == [], "a server created without firewall has none")

    listed = client.servers.get_all(label_selector="dayshift-cluster=py")
    check([s.name for s in listed] == ["py-1"], "servers.get_all(label_selector=...)")

    fw = client.firewalls.get_by_name("py-fw")
    check(fw is not None and [r.server.id for r in fw.applied_to] == [server.id],
          "firewalls.get_by_name: applied_to the server")
    check(client.firewalls.get_all(label_selector="app=py")[0].id == fw.id,
          "firewalls.get_all(label_selector=...)")
    actions = fw.set_rules([
        FirewallRule(direction="in", protocol="tcp", port="8443",
                     source_ips=["198.51.100.0/24"], description="node port"),
        FirewallRule(direction="out", protocol="icmp", destination_ips=["0.0.0.0/0"]),
    ])
    for a in actions:
        a.wait_until_finished()
    check({a.command for a in actions} == {"set_firewall_rules", "apply_firewall"},
          "set_rules: set_firewall_rules and apply_firewall actions")
    fw = client.firewalls.get_by_id(fw.id)
    check([(r.direction, r.protocol, r.port) for r in fw.rules]
          == [("in", "tcp", "8443"), ("out", "icmp", None)], "set_rules replaced the rules")

    for a in fw.apply_to_resources([FirewallResource(type="server", server=other.server)]):
        a.wait_until_finished()
    check(len(client.firewalls.get_by_id(fw.id).applied_to) == 2, "apply_to_resources")
    try:
        fw.delete()
        raise Failed("a firewall in use was deleted")
    except hcloud.APIException as e:
        check(e.code == "resource_in_use", "deleting a firewall in use: resource_in_use")
    for a in fw.remove_from_resources([FirewallResource(type="server", server=other.server)]):
        a.wait_until_finished()
    check(client.servers.get_by_id(other.server.id).public_net.firewalls == [],
          "remove_from_resources")
    check(len(fw.get_actions()) >= 3, "firewall actions list")

    for s in (server, other.server):
        client.servers.delete(s).wait_until_finished()
    check(client.servers.get_all() == [], "servers.delete")
    check(client.firewalls.get_by_id(fw.id).applied_to == [],
          "a deleted server leaves the firewall")
    check(fw.delete() is True, "firewalls.delete")
    check(client.firewalls.get_by_name("py-fw") is None, "the firewall is gone")


def main():
    if len(sys.argv) != 3 or sys.argv[1] not in ("hcloud", "scaleway"):
        print(__doc__, file=sys.stderr)
        return 2
    which, url = sys.argv[1], sys.argv[2]
    try:
        (run_hcloud if which == "hcloud" else run_scaleway)(url)
    except Failed as e:
        print(f"FAILED ({which}): {e}", file=sys.stderr, flush=True)
        return 1
    except Exception:  # any client error is a failure, shown in full
        print(f"FAILED ({which}): the client raised", file=sys.stderr, flush=True)
        traceback.print_exc()
        return 1
    print(f"{which}: all checks passed", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
