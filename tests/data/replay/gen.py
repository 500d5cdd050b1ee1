#!/usr/bin/env python3
"""Generates the scripts/replay fixtures in this directory.

    python3 tests/data/replay/gen.py [OUTDIR]

Writes, deterministically (the same bytes on every run and machine):

  normal-day.jsonl    2,000 order and payment events over 100 streams,
                      interleaved over one business day; every record is good.
  poison-mix.jsonl    500 records over 30 streams, 47 of them bad in every
                      way kpbridge knows (see POISON below), one of them a
                      value over 1 MiB.
  huge-stream.jsonl   5,000 events of one ledger stream.

and next to each FIXTURE.jsonl a FIXTURE.expected: the outcome of replaying
it into a fresh database, one "name count" line each:

  records N         records in the fixture
  events N          rows kpbridge must write
  dead_letters N    dead letters in all
  streams N         distinct streams that get events
  REASON N          dead letters with that reason (one line per reason)

The format of the .jsonl files is the one `kpbridge-devkafka load` reads
(see `kpbridge-devkafka --help`).  tests/test_replay.c compares the report of
scripts/replay with the .expected files.  Edit this script, never the outputs.
"""

import base64
import datetime
import json
import os
import random
import sys
import uuid

# uuid5 namespace for the event ids: stable, distinct per (fixture, index).
NS = uuid.UUID("6f2c1f0e-6d1b-4c55-9a0e-2b7c3d5e8a41")
DAY = datetime.datetime(2025, 3, 14, 6, 0, 0, tzinfo=datetime.timezone.utc)
DAY_MS = int(DAY.timestamp() * 1000)

CUSTOMERS = [
    ("cust-1001", "Ada Lovelace", "London"),
    ("cust-1002", "Zoë Faure", "Lyon"),
    ("cust-1003", "Łukasz Nowak", "Kraków"),
    ("cust-1004", "Søren Kierkegaard", "København"),
    ("cust-1005", "Grace Hopper", "Arlington"),
    ("cust-1006", "山田 太郎", "東京"),
    ("cust-1007", "José Núñez", "Sevilla"),
    ("cust-1008", "Ingrid Bergström", "Göteborg"),
    ("cust-1009", "Chidi Okafor", "Lagos"),
    ("cust-1010", "Anaïs Dubois", "Montréal"),
    ("cust-1011", "Mehmet Yılmaz", "İzmir"),
    ("cust-1012", "Priya Raman", "Chennai"),
]
PRODUCTS = [
    ("SKU-ESP-250", "Espresso beans 250 g", 1290),
    ("SKU-FLT-1KG", "Filter coffee 1 kg", 2450),
    ("SKU-MUG-STN", "Stoneware mug", 1500),
    ("SKU-GRD-HND", "Hand grinder", 5900),
    ("SKU-KTL-GSN", "Gooseneck kettle", 6900),
    ("SKU-PAP-100", "Paper filters (100)", 450),
    ("SKU-TEA-EGB", "Earl Grey, loose, 100 g", 890),
    ("SKU-SCL-DIG", "Digital scale", 3490),
]
CURRENCIES = ["EUR", "EUR", "EUR", "USD", "GBP", "SEK"]


def compact(obj):
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def money(cents):
    return "%d.%02d" % (cents // 100, cents % 100)


def event_id(fixture, n):
    return str(uuid.uuid5(NS, "%s/%d" % (fixture, n)))


def iso(ms):
    t = datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.timezone.utc)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + "%03dZ" % (ms % 1000)


class Writer:
    """Collects the lines of one fixture and its expected outcome."""

    def __init__(self, name, comment):
        self.name = name
        self.lines = ["# %s" % c for c in comment]
        self.records = 0
        self.events = 0
        self.streams = set()
        self.reasons = {}

    def good(self, rec, stream):
        self.lines.append(compact(rec))
        self.records += 1
        self.events += 1
        self.streams.add(stream)

    def bad(self, rec, reason):
        self.lines.append(compact(rec))
        self.records += 1
        self.reasons[reason] = self.reasons.get(reason, 0) + 1

    def write(self, outdir):
        path = os.path.join(outdir, self.name + ".jsonl")
        with open(path, "w", encoding="utf-8", newline="\n") as f:
            f.write("\n".join(self.lines) + "\n")
        dead = sum(self.reasons.values())
        assert self.events + dead == self.records
        with open(os.path.join(outdir, self.name + ".expected"), "w",
                  encoding="utf-8", newline="\n") as f:
            f.write("# expected outcome of scripts/replay %s.jsonl into a "
                    "fresh database (written by gen.py)\n" % self.name)
            f.write("records %d\n" % self.records)
            f.write("events %d\n" % self.events)
            f.write("dead_letters %d\n" % dead)
            f.write("streams %d\n" % len(self.streams))
            for reason in sorted(self.reasons):
                f.write("%s %d\n" % (reason, self.reasons[reason]))
        size = os.path.getsize(path)
        assert size < 2 * 1024 * 1024, "%s is %d bytes" % (path, size)
        print("%s: %d records, %d events, %d dead letters, %d streams, "
              "%d bytes" % (path, self.records, self.events, dead,
                            len(self.streams), size))


# --------------------------------------------------------------- streams

def order_stream(rng, order_no, length):
    """The life of one order: `length` (>= 7) events, as (type, payload)."""
    order_id = "order-%06d" % order_no
    cust_id, cust_name, city = rng.choice(CUSTOMERS)
    currency = rng.choice(CURRENCIES)
    cart = {}
    out = [("OrderPlaced", {
        "order_id": order_id, "customer_id": cust_id,
        "customer_name": cust_name, "currency": currency,
        "channel": rng.choice(["web", "app", "store"]),
    })]
    item_events = length - 6
    for _ in range(item_events):
        if cart and rng.random() < 0.15:
            sku = rng.choice(sorted(cart))
            del cart[sku]
            out.append(("ItemRemoved", {"order_id": order_id, "sku": sku}))
            continue
        sku, title, price = rng.choice(PRODUCTS)
        qty = rng.randint(1, 4)
        cart[sku] = cart.get(sku, 0) + qty * price
        out.append(("ItemAdded", {
            "order_id": order_id, "sku": sku, "title": title,
            "quantity": qty, "unit_price": money(price),
            "currency": currency,
        }))
    total = sum(cart.values())
    out.append(("ShippingAddressSet", {
        "order_id": order_id,
        "address": {"name": cust_name, "city": city,
                    "street": "%d Market Street" % rng.randint(1, 250),
                    "postcode": "%05d" % rng.randint(1000, 99999)},
    }))
    out.append(("OrderConfirmed", {"order_id": order_id,
                                   "total": money(total),
                                   "currency": currency,
                                   "lines": len(cart)}))
    out.append(("OrderPaid", {"order_id": order_id, "amount": money(total),
                              "currency": currency,
                              "payment_ref": "pay-%08x" % rng.getrandbits(32)}))
    out.append(("OrderShipped", {"order_id": order_id,
                                 "carrier": rng.choice(["DHL", "UPS",
                                                        "PostNord", "GLS"]),
                                 "tracking": "TRK%010d" % rng.getrandbits(32)}))
    out.append(("OrderDelivered", {"order_id": order_id,
                                   "signed_by": cust_name}))
    return order_id, out


def payment_stream(rng, account_no, length):
    """A merchant payment account's ledger: `length` events."""
    account = "payment-acct-%04d" % account_no
    currency = rng.choice(CURRENCIES)
    balance = 0
    out = [("PaymentAccountOpened", {"account": account,
                                      "currency": currency,
                                      "merchant": "merchant-%03d"
                                      % rng.randint(1, 400)})]
    captured = []
    for _ in range(length - 1):
        roll = rng.random()
        if captured and roll < 0.12:
            ref, amount = captured.pop(rng.randrange(len(captured)))
            balance -= amount
            out.append(("PaymentRefunded", {
                "account": account, "payment_ref": ref,
                "amount": money(amount), "currency": currency,
                "reason": rng.choice(["customer_request", "damaged",
                                      "duplicate"])}))
        elif balance > 50000 and roll < 0.22:
            amount = balance // 2
            balance -= amount
            out.append(("PayoutSent", {"account": account,
                                       "amount": money(amount),
                                       "currency": currency,
                                       "iban_last4": "%04d"
                                       % rng.randint(0, 9999)}))
        else:
            amount = rng.randint(300, 40000)
            ref = "pay-%08x" % rng.getrandbits(32)
            out.append(("PaymentAuthorized", {"account": account,
                                              "payment_ref": ref,
                                              "amount": money(amount),
                                              "currency": currency}))
            if len(out) < length:
                balance += amount
                captured.append((ref, amount))
                out.append(("PaymentCaptured", {"account": account,
                                                "payment_ref": ref,
                                                "amount": money(amount),
                                                "currency": currency}))
        if len(out) >= length:
            break
    return account, out[:length]


def split_total(rng, total, parts, low):
    """`parts` sizes >= low that add up to `total`."""
    sizes = [low] * parts
    for _ in range(total - low * parts):
        sizes[rng.randrange(parts)] += 1
    return sizes


def interleave(rng, streams, start_ms, span_ms):
    """Spreads each stream's events over the day, in order per stream, and
    merges them by time: [(ms, stream, seq, type, payload)]."""
    merged = []
    for stream, events in streams:
        t = start_ms + rng.randrange(span_ms // 2)
        for seq, (etype, payload) in enumerate(events, 1):
            t += rng.randint(5_000, (span_ms // 2) // max(len(events), 1))
            merged.append((t, stream, seq, etype, payload))
    merged.sort(key=lambda e: (e[0], e[1], e[2]))
    return merged


def headers_for(fixture, n, etype, extra=None):
    h = {"event-type": etype, "event-id": event_id(fixture, n),
         "content-type": "application/json"}
    if extra:
        h.update(extra)
    return h


# ---------------------------------------------------------- normal-day

def normal_day(outdir):
    rng = random.Random(20250314)
    w = Writer("normal-day", [
        "normal-day: 2,000 order and payment events over 100 streams on",
        "2025-03-14, interleaved by time; every record is good.",
        "Generated by gen.py; do not edit (edit gen.py and run it).",
    ])
    sizes = split_total(rng, 2000, 100, 8)
    streams = []
    for i, size in enumerate(sizes):
        if i % 10 < 7:
            streams.append(order_stream(rng, 240000 + i, size))
        else:
            streams.append(payment_stream(rng, 3100 + i, size))
    for n, (ms, stream, seq, etype, payload) in enumerate(
            interleave(rng, streams, DAY_MS, 14 * 3600 * 1000)):
        extra = {"producer": "shop-%s" % stream.split("-")[0],
                 "correlation-id": "corr-%s-%d" % (stream, seq)}
        if seq == 1:
            # A creating event asserts that its stream is new.
            extra["expected-version"] = "0"
        payload = dict(payload, occurred_at=iso(ms))
        w.good({"key": stream, "headers": headers_for("normal-day", n, etype,
                                                       extra),
                "value": payload, "timestamp": ms}, stream)
    w.write(outdir)


# ---------------------------------------------------------- poison-mix

def b64(raw):
    return base64.b64encode(raw).decode("ascii")


# (reason, how many, builder(ctx) -> record).  ctx gives a live stream
# key ("key"), its good-event count ("version"), a fresh event id ("id"),
# an already used event id and its stream ("used_id", "used_key") and the
# time ("ms").
def poison_kinds():
    long_key = "order-" + "9" * 300           # 306 bytes, over 255
    big = ("The quick brown fox jumps over the lazy dog. " * 23500)[:1050000]
    return [
        ("no_stream_id", [
            lambda c: {"key": None, "headers": hdr(c, "OrderPlaced"),
                       "value": {"note": "null key"}},
            lambda c: {"headers": hdr(c, "OrderPlaced"),
                       "value": {"note": "absent key is a null key"}},
            lambda c: {"key": None, "headers": hdr(c, "ItemAdded"),
                       "value": {"sku": "SKU-MUG-STN"}},
            lambda c: {"key": None, "headers": hdr(c, "OrderPaid"),
                       "value": {"amount": "12.00"}},
            lambda c: {"key": None, "value": {"note": "no key, no headers"}},
        ]),
        ("bad_stream_id", [
            lambda c: {"key": "", "headers": hdr(c, "OrderPlaced"),
                       "value": {"note": "empty key"}},
            lambda c: {"key": "", "headers": hdr(c, "ItemAdded"),
                       "value": {"note": "empty key again"}},
            lambda c: {"key": "   ", "headers": hdr(c, "OrderPlaced"),
                       "value": {"note": "blank key"}},
            lambda c: {"key": long_key, "headers": hdr(c, "OrderPlaced"),
                       "value": {"note": "key of 306 bytes"}},
            lambda c: {"key": "ü" * 130, "headers": hdr(c, "OrderPlaced"),
                       "value": {"note": "130 characters, 260 bytes"}},
            lambda c: {"key": "order-*", "headers": hdr(c, "OrderPlaced"),
                       "value": {"note": "wildcard in key"}},
            lambda c: {"key": "order-[1]", "headers": hdr(c, "OrderPlaced"),
                       "value": {"note": "bracket in key"}},
            lambda c: {"key": "order-?", "headers": hdr(c, "OrderPlaced"),
                       "value": {"note": "question mark in key"}},
            lambda c: {"key": "order-1]", "headers": hdr(c, "OrderPlaced"),
                       "value": {"note": "closing bracket in key"}},
        ]),
        ("invalid_json", [
            lambda c: {"key": c["key"], "headers": hdr(c, "ItemAdded"),
                       "value_raw": '{"sku":"SKU-ESP-250","quantity":2'},
            lambda c: {"key": c["key"], "headers": hdr(c, "ItemAdded"),
                       "value_raw": '{"sku":"SKU-ESP-250",}'},
            lambda c: {"key": c["key"], "headers": hdr(c, "ItemAdded"),
                       "value_raw": "{'sku': 'SKU-ESP-250'}"},
            lambda c: {"key": c["key"], "headers": hdr(c, "OrderPaid"),
                       "value_raw": "amount=12.00&currency=EUR"},
            lambda c: {"key": c["key"], "headers": hdr(c, "OrderPaid"),
                       "value_raw": '{"amount":NaN}'},
            lambda c: {"key": c["key"], "headers": hdr(c, "OrderPaid"),
                       "value_raw": "   "},
        ]),
        ("invalid_utf8", [
            lambda c: {"key": c["key"], "headers": hdr(c, "ItemAdded"),
                       "value_b64": b64(b'{"title":"caf\xe9"}')},
            lambda c: {"key": c["key"], "headers": hdr(c, "ItemAdded"),
                       "value_b64": b64(b'{"title":"\xc0\xaf"}')},
            lambda c: {"key": c["key"], "headers": hdr(c, "ItemAdded"),
                       "value_b64": b64(b'{"title":"\x80abc"}')},
            lambda c: {"key": c["key"], "headers": hdr(c, "ItemAdded"),
                       "value_b64": b64(b'\xff\xfe{"title":"x"}')},
        ]),
        ("nul_byte", [
            lambda c: {"key": c["key"], "headers": hdr(c, "ItemAdded"),
                       "value_b64": b64(b'{"title":"a\x00b"}')},
            lambda c: {"key": c["key"], "headers": hdr(c, "ItemAdded"),
                       "value_b64": b64(b'{"title":"ab"}\x00')},
            lambda c: {"key": c["key"], "headers": hdr(c, "ItemAdded"),
                       "value_raw": '{"title":"a\\u0000b"}'},
            lambda c: {"key": c["key"], "headers": hdr(c, "OrderPaid"),
                       "value_raw": '{"note":{"inner":"\\u0000"}}'},
        ]),
        ("bad_event_id", [
            lambda c: {"key": c["key"],
                       "headers": hdr(c, "ItemAdded", eid="not-a-uuid"),
                       "value": {"sku": "SKU-PAP-100"}},
            lambda c: {"key": c["key"],
                       "headers": hdr(c, "ItemAdded", eid="12345"),
                       "value": {"sku": "SKU-PAP-100"}},
            lambda c: {"key": c["key"], "headers": hdr(c, "ItemAdded", eid=""),
                       "value": {"sku": "SKU-PAP-100"}},
            lambda c: {"key": c["key"],
                       "headers": hdr(c, "ItemAdded", eid=c["id"][:-1]),
                       "value": {"sku": "SKU-PAP-100"}},
        ]),
        ("bad_expected_version", [
            lambda c: {"key": c["key"],
                       "headers": hdr(c, "ItemAdded", ev="abc"),
                       "value": {"sku": "SKU-TEA-EGB"}},
            lambda c: {"key": c["key"],
                       "headers": hdr(c, "ItemAdded", ev="-1"),
                       "value": {"sku": "SKU-TEA-EGB"}},
            lambda c: {"key": c["key"],
                       "headers": hdr(c, "ItemAdded", ev="1.5"),
                       "value": {"sku": "SKU-TEA-EGB"}},
            lambda c: {"key": c["key"],
                       "headers": hdr(c, "ItemAdded", ev=""),
                       "value": {"sku": "SKU-TEA-EGB"}},
        ]),
        ("version_conflict", [
            # The stream is at c["version"]: expect something else.
            lambda c: {"key": c["key"],
                       "headers": hdr(c, "OrderPlaced", ev="0"),
                       "value": {"note": "placed twice"}},
            lambda c: {"key": c["key"],
                       "headers": hdr(c, "ItemAdded",
                                      ev=str(c["version"] + 3)),
                       "value": {"note": "from the future"}},
            lambda c: {"key": c["key"],
                       "headers": hdr(c, "ItemAdded",
                                      ev=str(c["version"] - 1)),
                       "value": {"note": "stale writer"}},
            lambda c: {"key": c["key"],
                       "headers": hdr(c, "OrderPaid",
                                      ev=str(c["version"] + 100)),
                       "value": {"note": "far ahead"}},
        ]),
        ("rejected_by_database", [
            # The event id of an event written earlier: a unique violation.
            # It goes to the stream of that event, so that Kafka order (one
            # partition) decides which of the two is the duplicate.
            lambda c: {"key": c["used_key"],
                       "headers": hdr(c, "ItemAdded", eid=c["used_id"]),
                       "value": {"note": "duplicate event id"}},
            lambda c: {"key": c["used_key"],
                       "headers": hdr(c, "OrderPaid", eid=c["used_id"]),
                       "value": {"note": "duplicate event id"}},
            lambda c: {"key": c["used_key"],
                       "headers": hdr(c, "OrderShipped",
                                      eid=c["used_id"].upper()),
                       "value": {"note": "duplicate event id, upper case"}},
        ]),
        ("too_large", [
            lambda c: {"key": c["key"], "headers": hdr(c, "AttachmentAdded"),
                       "value_raw": json.dumps(big)},
        ]),
        ("no_event_type", [
            lambda c: {"key": c["key"], "headers": {"event-id": c["id"]},
                       "value": {"note": "no event-type header"}},
            lambda c: {"key": c["key"], "headers": hdr(c, ""),
                       "value": {"note": "empty event-type header"}},
        ]),
        ("no_payload", [
            lambda c: {"key": c["key"], "headers": hdr(c, "OrderPaid")},
        ]),
    ]


def hdr(c, etype, eid=None, ev=None):
    h = {"event-type": etype, "event-id": c["id"] if eid is None else eid}
    if ev is not None:
        h["expected-version"] = ev
    return h


def poison_mix(outdir):
    rng = random.Random(500)
    w = Writer("poison-mix", [
        "poison-mix: 500 records over 30 order streams, 47 of them bad in",
        "every way kpbridge knows (the reasons are in poison-mix.expected),",
        "one of them a value over 1 MiB (too_large).",
        "Generated by gen.py; do not edit (edit gen.py and run it).",
    ])
    total, good_target = 500, 453
    sizes = split_total(rng, good_target, 30, 9)
    streams = [order_stream(rng, 770000 + i, s) for i, s in enumerate(sizes)]
    good = interleave(rng, streams, DAY_MS, 10 * 3600 * 1000)

    bad = [(reason, b) for reason, builders in poison_kinds()
           for b in builders]
    assert len(bad) + len(good) == total, (len(bad), len(good))
    # Bad records at fixed, spread positions (never first: a duplicate id
    # needs an event before it).
    slots = sorted(rng.sample(range(40, total), len(bad)))
    rng.shuffle(bad)
    bad_at = dict(zip(slots, bad))

    version = {}       # good events written per stream so far
    used_ids = []      # (event id, stream) of good events so far
    gi = 0
    for n in range(total):
        eid = event_id("poison-mix", n)
        if n in bad_at:
            reason, build = bad_at[n]
            # A live stream that has events already, so that a conflict
            # or a duplicate refers to something real.
            live = sorted(s for s, v in version.items() if v >= 2)
            key = rng.choice(live)
            used_id, used_key = rng.choice(used_ids)
            ctx = {"key": key, "version": version[key], "id": eid,
                   "used_id": used_id, "used_key": used_key,
                   "ms": good[min(gi, len(good) - 1)][0]}
            rec = build(ctx)
            rec["timestamp"] = ctx["ms"]
            w.bad(rec, reason)
            continue
        ms, stream, seq, etype, payload = good[gi]
        gi += 1
        h = {"event-type": etype, "event-id": eid}
        if seq == 1:
            h["expected-version"] = "0"
        elif rng.random() < 0.1:
            # A correct expectation: the events this stream has so far.
            h["expected-version"] = str(version.get(stream, 0))
        rec = {"key": stream, "headers": h, "value": payload,
               "timestamp": ms}
        if etype == "ItemRemoved" and rng.random() < 0.5:
            # Repeated header names: the last one wins.
            rec["headers"] = [["event-type", "Stale"]] + \
                [[k, v] for k, v in h.items()]
        version[stream] = version.get(stream, 0) + 1
        used_ids.append((eid, stream))
        w.good(rec, stream)
    w.write(outdir)


# --------------------------------------------------------- huge-stream

def huge_stream(outdir):
    rng = random.Random(5000)
    w = Writer("huge-stream", [
        "huge-stream: 5,000 events of one ledger stream, written as",
        "statements of at most batch.max_events rows each.",
        "Generated by gen.py; do not edit (edit gen.py and run it).",
    ])
    stream = "ledger-eur-main"
    balance = 0
    ms = DAY_MS
    for n in range(5000):
        ms += rng.randint(200, 15_000)
        if n == 0:
            etype, body = "LedgerOpened", {"currency": "EUR"}
        elif balance > 100000 and rng.random() < 0.4:
            amount = rng.randint(100, balance // 4)
            balance -= amount
            etype, body = "AccountDebited", {"amount": money(amount)}
        else:
            amount = rng.randint(100, 25000)
            balance += amount
            etype, body = "AccountCredited", {"amount": money(amount)}
        body.update({"ledger": stream, "seq": n + 1,
                     "balance": money(balance), "booked_at": iso(ms)})
        h = {"event-type": etype, "event-id": event_id("huge-stream", n)}
        if n == 0:
            h["expected-version"] = "0"
        w.good({"key": stream, "headers": h, "value": body,
                "timestamp": ms}, stream)
    w.write(outdir)


def main():
    outdir = sys.argv[1] if len(sys.argv) > 1 else \
        os.path.dirname(os.path.abspath(__file__))
    normal_day(outdir)
    poison_mix(outdir)
    huge_stream(outdir)


if __name__ == "__main__":
    main()
