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
        check(bool(e.correlation_id), "errors carry X-Correlation-Id")

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


SCW_PROJECT = "00000000-0000-4000-8000-0000000da75f"  # the fake's project


def run_scaleway(url):
    from importlib.metadata import version

    from scaleway import Client
    from scaleway.instance.v1 import (
        InstanceV1API,
        SecurityGroupPolicy,
        SecurityGroupRuleAction,
        SecurityGroupRuleDirection,
        SecurityGroupRuleProtocol,
        SetSecurityGroupRulesRequestRule,
    )
    from scaleway.instance.v1.custom_api import InstanceUtilsV1API
    from scaleway_core.api import ScalewayException

    print(f"scaleway {version('scaleway')} against {url}", flush=True)
    zone = "fr-par-2"
    client = Client(
        access_key="SCWXXXXXXXXXXXXXXXXX",
        secret_key="11111111-1111-4111-8111-111111111111",
        api_url=url,
        default_zone=zone,
        default_project_id=SCW_PROJECT,
    )
    # InstanceUtilsV1API is InstanceV1API plus the SDK's public create_server and user data.
    api = InstanceUtilsV1API(client)
    check(isinstance(api, InstanceV1API), "InstanceUtilsV1API is an InstanceV1API")

    types = api.list_servers_types(zone=zone, per_page=100)
    check("L4-1-24G" in types.servers and types.servers["L4-1-24G"].gpu == 1,
          "list_servers_types lists L4-1-24G with one GPU")
    # The SDK copies X-Total-Count (a string) over the body's total_count.
    check(int(types.total_count) == len(types.servers), "list_servers_types total_count")
    l4 = types.servers["L4-1-24G"]
    check(l4.gpu_info is not None and l4.gpu_info.gpu_name == "L4" and l4.network.ipv6_support,
          "server type gpu_info and network")
    avail = api.get_server_types_availability(zone=zone)
    check(str(avail.servers["L4-1-24G"].availability) == "available",
          "get_server_types_availability")
    images = api.list_images_all(zone=zone)
    check(any("Noble" in i.name for i in images), "list_images_all lists Ubuntu Noble")

    sg = api.create_security_group(
        zone=zone, name="py-sg", description="dayshift nodes", stateful=True,
        inbound_default_policy=SecurityGroupPolicy.DROP,
        outbound_default_policy=SecurityGroupPolicy.ACCEPT, tags=["dayshift"],
    ).security_group
    check(sg.id and sg.name == "py-sg" and str(sg.inbound_default_policy) == "drop"
          and sg.stateful and not sg.project_default, "create_security_group")
    ssh = api.create_security_group_rule(
        zone=zone, security_group_id=sg.id, protocol=SecurityGroupRuleProtocol.TCP,
        direction=SecurityGroupRuleDirection.INBOUND, action=SecurityGroupRuleAction.ACCEPT,
        ip_range="203.0.113.7/32", dest_port_from=22, position=1, editable=True,
    ).rule
    check(ssh.dest_port_from == 22 and ssh.position == 1 and str(ssh.protocol) == "tcp",
          "create_security_group_rule")
    rules = api.set_security_group_rules(zone=zone, security_group_id=sg.id, rules=[
        SetSecurityGroupRulesRequestRule(
            id=ssh.id, action=SecurityGroupRuleAction.ACCEPT,
            protocol=SecurityGroupRuleProtocol.TCP,
            direction=SecurityGroupRuleDirection.INBOUND, ip_range="203.0.113.7/32",
            dest_port_from=22, position=1),
        SetSecurityGroupRulesRequestRule(
            action=SecurityGroupRuleAction.ACCEPT, protocol=SecurityGroupRuleProtocol.TCP,
            direction=SecurityGroupRuleDirection.INBOUND, ip_range="203.0.113.7",
            dest_port_from=8443, position=2),
        SetSecurityGroupRulesRequestRule(
            action=SecurityGroupRuleAction.ACCEPT, protocol=SecurityGroupRuleProtocol.ICMP,
            direction=SecurityGroupRuleDirection.INBOUND, ip_range="0.0.0.0/0", position=3),
    ]).rules
    check([(r.position, r.dest_port_from) for r in rules] == [(1, 22), (2, 8443), (3, None)],
          "set_security_group_rules: rules in position order, ICMP without port")
    check(rules[0].id == ssh.id, "set_security_group_rules keeps the id of a rule it is given")
    check(rules[1].ip_range == "203.0.113.7/32", "a bare IP comes back as a /32 range")
    listed = api.list_security_group_rules_all(zone=zone, security_group_id=sg.id)
    check([r.id for r in listed] == [r.id for r in rules], "list_security_group_rules_all")
    try:
        api.create_security_group_rule(
            zone=zone, security_group_id=sg.id, protocol=SecurityGroupRuleProtocol.TCP,
            direction=SecurityGroupRuleDirection.INBOUND,
            action=SecurityGroupRuleAction.ACCEPT, ip_range="not-an-ip", position=0,
            editable=True)
        raise Failed("a rule with ip_range not-an-ip was accepted")
    except ScalewayException as e:
        check(e.status_code == 400, "a rule with a bad ip_range: 400")
    check([g.id for g in api.list_security_groups_all(zone=zone, name="py-sg")] == [sg.id],
          "list_security_groups_all(name=...)")
    check([g.id for g in api.list_security_groups_all(zone=zone, tags=["dayshift"])] == [sg.id],
          "list_security_groups_all(tags=...)")

    tags = ["dayshift-cluster=py", "dayshift-node=n1"]
    server = api.create_server(zone=zone, commercial_type="DEV1-S", image="ubuntu_noble",
                               name="py-1", tags=tags, security_group=sg.id,
                               dynamic_ip_required=True).server
    check(server.security_group is not None and server.security_group.id == sg.id,
          "create_server(security_group=...): the server carries the group")
    check(server.public_ip is not None and server.image is not None, "the server has an IP and image")
    other = api.create_server(zone=zone, commercial_type="DEV1-S", image="ubuntu_noble",
                              name="py-2", tags=["other"]).server
    default = api.get_security_group(zone=zone, security_group_id=other.security_group.id)
    check(default.security_group.project_default,
          "a server created without security_group gets the project's default group")
    listed = api.list_servers_all(zone=zone, tags=["dayshift-cluster=py"])
    check([s.id for s in listed] == [server.id], "list_servers_all(tags=...)")
    got = api.get_security_group(zone=zone, security_group_id=sg.id).security_group
    check([s.id for s in got.servers] == [server.id], "the group lists its server")
    try:
        api.delete_security_group(zone=zone, security_group_id=sg.id)
        raise Failed("a security group in use was deleted")
    except ScalewayException as e:
        check(e.status_code == 400, "deleting a group in use: 400")

    for s in (server, other):
        api.delete_server(zone=zone, server_id=s.id)
    check(api.list_servers_all(zone=zone) == [], "delete_server")
    for v in api.list_volumes_all(zone=zone):
        api.delete_volume(zone=zone, volume_id=v.id)
    check(api.list_volumes_all(zone=zone) == [], "delete_volume: nothing left behind")
    api.delete_security_group_rule(zone=zone, security_group_id=sg.id,
                                   security_group_rule_id=ssh.id)
    check(len(api.list_security_group_rules_all(zone=zone, security_group_id=sg.id)) == 2,
          "delete_security_group_rule")
    api.delete_security_group(zone=zone, security_group_id=sg.id)
    try:
        api.get_security_group(zone=zone, security_group_id=sg.id)
        raise Failed("a deleted security group is still there")
    except ScalewayException as e:
        check(e.status_code == 404, "delete_security_group: the group is gone (404)")


def main():
    if len(sys.argv) != 3 or sys.argv[1] not in ("hcloud", "scaleway"):
        print(__doc__, file=sys.stderr)
        return 2
    which, url = sys.argv[1], sys.argv[2]
    try:
        (run_hcloud if which == "hcloud" else run_scaleway)(url)
    except ImportError as e:
        print(f"FAILED ({which}): {e}; install the clients with `bash scripts/deps/python.sh`",
              file=sys.stderr, flush=True)
        return 1
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
