#!/usr/bin/env python3
"""Write the generated seeds of fuzz/corpus/ (python3 fuzz/seeds.py; stdlib only).

Stripe events are built from fuzz/fixtures/stripe/ (verbatim copies of shared/stripe-fixtures/,
Stripe's own examples) by editing values, never the shape, as tests/common/stripe.rs does.
gRPC seeds are one valid message per request kind, encoded by hand (field numbers from
proto/entitlements/v1/*.proto), prefixed by the selector byte of fuzz_targets/grpc_requests.rs.
The constants match fuzz/src/lib.rs (NOW, SECRET).
"""
import copy
import hashlib
import hmac
import json
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
NOW = 1_780_272_000
DAY = 86_400
SECRET = "whsec_fuzz_current"


def write(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def fixture(name):
    with open(os.path.join(HERE, "fixtures", "stripe", name)) as f:
        return json.load(f)


def sign(secret, t, body):
    mac = hmac.new(secret.encode(), f"{t}.{body}".encode(), hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def subscription(status, items, trial_end=None):
    s = fixture("subscription.json")
    created = NOW - 3 * DAY
    s.update(id="sub_fuzz", customer="cus_fuzz", status=status, created=created, start_date=created,
             billing_cycle_anchor=created, metadata={"tenant_id": "acme"},
             trial_start=created if trial_end else None, trial_end=trial_end,
             cancel_at_period_end=False, cancel_at=None, next_pending_invoice_item_invoice=None)
    ended = status in ("canceled", "incomplete_expired")
    s["canceled_at"] = NOW if ended else None
    s["ended_at"] = NOW if ended else None
    template = s["items"]["data"][0]
    data = []
    for price, quantity in items:
        interval = "year" if "annual" in price else "month"
        item = copy.deepcopy(template)
        item.update(id=f"si_fuzz_{price}", created=created, quantity=quantity, subscription="sub_fuzz",
                    current_period_start=created, current_period_end=created + 30 * DAY)
        item["price"]["id"] = price
        item["price"]["recurring"]["interval"] = interval
        item["plan"].update(id=price, interval=interval, interval_count=1)
        data.append(item)
    s["items"]["data"] = data
    s["items"]["url"] = "/v1/subscription_items?subscription=sub_fuzz"
    return s


def checkout(addon=None):
    cs = fixture("checkout_session.json")
    cs.update(id="cs_fuzz", mode="subscription", status="complete", payment_status="paid", payment_intent=None,
              customer="cus_fuzz", subscription="sub_fuzz", created=NOW - 60, url=None, client_reference_id="acme")
    cs["metadata"] = {"tenant_id": "acme", **({"addon": addon} if addon else {})}
    return cs


def invoice(paid):
    inv = fixture("invoice.json")
    inv.update(id="in_fuzz", customer="cus_fuzz", status="paid" if paid else "open", attempted=True, attempt_count=1,
               billing_reason="subscription_cycle", amount_paid=1000 if paid else 0,
               amount_remaining=0 if paid else 1000)
    inv["parent"]["type"] = "subscription_details"
    inv["parent"]["quote_details"] = None
    inv["parent"]["subscription_details"]["subscription"] = "sub_fuzz"
    inv["lines"]["data"][0]["invoice"] = "in_fuzz"
    inv["lines"]["data"][0]["parent"]["subscription_item_details"]["subscription"] = "sub_fuzz"
    return inv


def summary(keys):
    """async-stripe 1.0.0-rc.10's EntitlementsActiveEntitlementSummary: customer, entitlements, livemode."""
    data = [{"object": "entitlements.active_entitlement", "id": f"ent_{i}", "feature": f"feat_{i}",
             "livemode": False, "lookup_key": k} for i, k in enumerate(keys)]
    return {"object": "entitlements.active_entitlement_summary", "customer": "cus_fuzz", "livemode": False,
            "entitlements": {"object": "list", "data": data, "has_more": False,
                             "url": "/v1/customer/cus_fuzz/entitlements"}}


def event(eid, etype, obj, livemode=False):
    e = fixture("event_envelope.json")
    e.update(id=eid, type=etype, created=NOW - 10, livemode=livemode, pending_webhooks=1)
    e["data"]["object"] = obj
    return json.dumps(e, separators=(",", ":"))


def stripe_seeds():
    pro = [("price_pro_monthly", 1), ("price_pro_seat_monthly", 8), ("price_teams_monthly", 1)]
    events = [
        ("sub_created", event("evt_1", "customer.subscription.created", subscription("active", pro))),
        ("sub_trialing", event("evt_2", "customer.subscription.updated",
                               subscription("trialing", [("price_premium_annual", 1)], NOW + 10 * DAY))),
        ("sub_past_due", event("evt_3", "customer.subscription.updated", subscription("past_due", pro))),
        ("sub_deleted", event("evt_4", "customer.subscription.deleted", subscription("canceled", pro))),
        ("sub_unknown_price", event("evt_5", "customer.subscription.created",
                                    subscription("active", [("price_nope", 1)]))),
        ("checkout_addon", event("evt_6", "checkout.session.completed", checkout("ai_assistant"))),
        ("checkout_plain", event("evt_7", "checkout.session.completed", checkout())),
        ("invoice_paid", event("evt_8", "invoice.paid", invoice(True))),
        ("invoice_failed", event("evt_9", "invoice.payment_failed", invoice(False))),
        ("summary", event("evt_10", "entitlements.active_entitlement_summary.updated",
                          summary(["teams", "sso", "nope"]))),
        ("ignored_type", event("evt_11", "plan.created", fixture("event_envelope.json")["data"]["object"])),
        ("live_sub", event("evt_12", "customer.subscription.created", subscription("active", pro), True)),
    ]
    for name, body in events:
        mode = 2 if name.startswith("live") else 0  # 0: signed, test mode; 2: signed, live endpoint
        write("stripe_webhook", f"signed_{name}", bytes([mode]) + body.encode())
    body = events[0][1]
    good = sign(SECRET, NOW, body)
    headers = {
        "valid": good,
        "old_timestamp": sign(SECRET, NOW - 3600, body),
        "wrong_secret": sign("whsec_other", NOW, body),
        "two_signatures": good + ",v1=00ff,v0=abc",
        "no_v1": f"t={NOW}",
        "bad_t": "t=abc,v1=00",
        "empty": "",
    }
    for name, h in headers.items():  # mode 1: the header is part of the input
        write("stripe_webhook", f"header_{name}", b"\x01" + h.encode() + b"\n" + body.encode())
    for f in ["subscription", "checkout_session", "invoice", "event_envelope"]:
        with open(os.path.join(HERE, "fixtures", "stripe", f + ".json"), "rb") as fh:
            write("stripe_webhook", f"fixture_{f}", b"\x00" + fh.read())


# ---------------------------------------------------------------- protobuf, by hand
def varint(n):
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def f_int(no, v):
    return varint(no << 3) + varint(v) if v else b""


def f_bool(no, v):
    return varint(no << 3) + b"\x01" if v else b""


def f_bytes(no, v):
    v = v.encode() if isinstance(v, str) else v
    return varint(no << 3 | 2) + varint(len(v)) + v


def f_str(no, v):
    return f_bytes(no, v) if v else b""


def f_msg(no, v):
    return f_bytes(no, v)


def ts(t):
    return f_int(1, t)


def header(tenant="acme", actor="ops", rationale="support ticket 42"):
    return f_str(1, tenant) + f_str(2, actor) + f_str(3, rationale)


def grpc(selector, name, msg):
    write("grpc_requests", f"{selector:02}_{name}", bytes([selector]) + msg)


def grpc_seeds():
    # AdminService commands: tenant_id = 1, actor = 2, rationale = 3.
    grpc(0, "put_tenant", header() + f_str(4, "cus_fuzz") + f_msg(5, ts(NOW)) + varint(7 << 3) + b"\x00")  # archived: Some(false)
    grpc(0, "put_tenant_trial", header() + f_msg(5, ts(NOW)) + f_msg(6, ts(NOW + 14 * DAY)))
    grpc(1, "assign_plan", header() + f_str(4, "premium") + f_msg(5, ts(NOW + DAY)))
    grpc(2, "unassign_plan", header() + f_str(4, "pro"))
    grpc(3, "extend_trial_days", header() + f_int(4, 7))
    grpc(3, "extend_trial_until", header() + f_msg(5, ts(NOW + 5 * DAY)))
    grpc(4, "grant_addon", header() + f_str(4, "teams") + f_int(5, 3))
    grpc(5, "revoke_addon", header() + f_str(4, "teams"))
    grpc(6, "set_override_number", header() + f_str(4, "seats") + f_int(6, 40) + f_msg(8, ts(NOW + DAY)))
    grpc(6, "set_override_enabled", header() + f_str(4, "sso") + f_bool(5, True))
    grpc(6, "set_override_unlimited", header() + f_str(4, "seats") + f_bool(7, True))
    grpc(7, "clear_override", header() + f_str(4, "seats"))
    grpc(8, "get_tenant", f_str(1, "acme"))
    grpc(9, "list_audit_events", f_str(1, "acme") + f_int(2, 20) + f_str(3, "41"))
    grpc(10, "list_stripe_events", f_str(1, "acme") + f_str(2, "failed") + f_int(3, 5))
    grpc(11, "replay_stripe_event", f_str(1, "evt_1") + f_str(2, "ops") + f_str(3, "catalog fixed"))
    # EntitlementService.
    grpc(12, "check", f_str(1, "acme") + f_str(2, "seats") + f_int(3, 4) + f_int(4, 2))
    items = b"".join(f_msg(2, f_str(1, f) + f_int(3, 1)) for f in ["sso", "seats", "ai_requests", "nope"])
    grpc(13, "check_batch", f_str(1, "acme") + items + f_int(3, 1))
    grpc(14, "explain", f_str(1, "acme") + f_str(2, "seats") + f_msg(3, ts(NOW + 20 * DAY)))
    grpc(15, "usage", f_str(1, "acme"))
    grpc(16, "record_usage", f_str(1, "acme") + f_str(2, "ai_requests") + f_int(3, 3) + f_int(4, 1)
         + f_str(5, "k1") + f_bool(6, True))
    grpc(17, "watch", f_str(1, "5eed-50"))
    grpc(18, "get_tenant_state", f_str(1, "acme"))
    # GetTenantStateResponse { tenant = 1 { tenant_id, stripe_customer_id, trial_start, trial_end,
    # revision = 6, plan_assignments = 8, overrides = 10 }, known = 2 }.
    assignment = f_str(1, "pro") + f_str(2, "ops") + f_str(3, "deal") + f_msg(4, ts(NOW - DAY)) + f_msg(5, ts(NOW + DAY))
    override = f_str(1, "seats") + f_msg(2, f_int(2, 12)) + f_str(3, "ops") + f_str(4, "deal") + f_msg(5, ts(NOW - DAY))
    tenant = (f_str(1, "acme") + f_str(2, "cus_fuzz") + f_msg(3, ts(NOW - 20 * DAY)) + f_msg(4, ts(NOW - 6 * DAY))
              + f_int(6, 4) + f_msg(8, assignment) + f_msg(10, override))
    grpc(19, "relay_tenant_state", f_msg(1, tenant) + f_bool(2, True))


def catalog_seeds():
    with open(os.path.join(HERE, "..", "examples", "catalog.toml"), "rb") as f:
        write("catalog", "example_catalog.toml", f.read())
    write("catalog", "broken_e2e.toml",
          b'default_plan = "gold"\n[features.flag]\nkind = "boolean"\n[plans.a]\nrank = 1\n'
          b'features = { flag = 7, nope = true }\n[plans.b]\nrank = 1\n')
    write("catalog", "minimal.toml", b'default_plan = "free"\n[plans.free]\nrank = 0\n')
    relay = ('default_plan = "free"\n'
             'features.api_calls = { kind = "counter", period = "month" }\n'
             'features.seats = { kind = "gauge" }\n'
             'features.projects = { kind = "config" }\n'
             'features.extra = { kind = "boolean" }\n'
             'plans.free = { rank = 0, features = { api_calls = 10, seats = 8 } }\n'
             'plans.pro = { rank = 1 }\n'
             'addons.sso = { features = { extra = true } }\n'
             '[[prices]]\nid = "${PRICE_PRO:-price_pro}"\nplan = "pro"\ninterval = "month"\n')
    write("catalog", "relay_like.toml", relay.encode())


if __name__ == "__main__":
    stripe_seeds()
    grpc_seeds()
    catalog_seeds()
    print("seeds written under", os.path.join(HERE, "corpus"))
