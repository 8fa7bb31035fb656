"""The command layer (TCacheModule): every command, reply shapes under RESP2 and RESP3,
pipelines, error mapping, on redis.Redis and redis.asyncio.Redis."""

from __future__ import annotations

import asyncio

import pytest
import redis
import redis.asyncio

from redis_tcache import FetchReply, GateRejected, TCacheModule

PROTOCOLS = [2, 3]


@pytest.fixture(params=PROTOCOLS)
def m(request, server, r):
    c = server.client(protocol=request.param)
    yield TCacheModule(c)
    c.close()


@pytest.mark.parametrize("decode", [False, True])
def test_reply_shapes(server, r, decode):
    for proto in PROTOCOLS:
        r.flushall()
        c = server.client(protocol=proto, decode_responses=decode)
        m = TCacheModule(c)
        assert m.set("k1", "v1", 100, tags=["a", "b"]) is True
        assert m.set("k1", "other", 100, nx=True) is False
        assert m.set("nope", "x", 100, xx=True) is False
        v = m.get("k1")
        assert v == ("v1" if decode else b"v1")
        assert m.get("missing") is None
        assert m.mget(["k1", "missing"]) == [v, None]
        assert sorted(m.tags("k1")) == ["a", "b"]
        assert m.tags("missing") is None
        assert m.tagcard("a") == 1
        cursor, keys = m.tagscan("a", 0, count=10)
        assert cursor == 0 and [k if isinstance(k, str) else k.decode() for k in keys] == ["k1"]
        f = m.fetch("k1", 1000)
        assert isinstance(f, FetchReply) and f.kind == "HIT" and f.value == v
        lease = m.fetch("k2", 1000)
        assert lease.kind == "LEASE" and isinstance(lease.token, str) and len(lease.token) == 16
        assert m.fetch("k2", 1000) == FetchReply("WAIT")
        assert m.set("k2", "computed", 100, lease=lease.token, tags=["a"]) is True
        assert m.verify() is True
        st = m.stats()
        assert isinstance(st, dict) and st["entries"] == 2 and isinstance(st["hit_rate"], str)
        assert st["leases_granted"] >= 1 and isinstance(st["gates"], dict)
        assert m.staletag("b") == 1
        assert m.get("k1") is None  # stale is a miss for GET
        assert m.fetch("k1", 1000).kind == "STALE"
        assert m.invalprefix("k2") == 1
        assert m.invaltag("a") == 1
        assert m.delete("k1", "zz") == 0
        assert m.set("k3", "x", 100) is True and m.delete("k3", "zz") == 1
        assert m.stats(reset=True) is True
        assert m.stats()["hits"] == 0
        # gates
        assert m.gate_set("g", '{"type":"object","required":["x"]}') is True
        assert m.gate_get("g") == '{"type":"object","required":["x"]}'
        assert m.gate_get("nope") is None
        assert m.gate_list() == ["g"]
        assert m.gate_check("g", '{"x":1}') is True
        with pytest.raises(GateRejected):
            m.gate_check("g", "{}")
        assert m.stats()["gates"]["g"]["rejected"] == 0  # a dry run is not counted
        with pytest.raises(GateRejected):
            m.set("gk", "{}", 100, gate="g")
        st = m.stats()
        assert st["gates"]["g"]["rejected"] == 1
        assert m.gate_del("g") == 1 and m.gate_del("g") == 0
        # permissions
        assert m.perm_set("p:1", '{"roles":["ed"],"permissions":["users:*"]}', 60) is True
        assert m.perm_get("p:1") == '{"roles":["ed"],"permissions":["users:*"]}'
        assert m.perm_check("p:1", "users:write") is True
        assert m.perm_check("p:1", "users:w", "reports:read") == [True, False]
        assert m.perm_check("p:2", "users:write") is None
        assert m.perm_invalrole("ed") == 1
        assert m.perm_set("p:1", {"roles": [], "permissions": []}.__repr__().replace("'", '"')) is True
        assert m.perm_invaluser("p:1") == 1
        assert m.perm_set("p:3", '{"roles":["x"],"permissions":[]}') is True
        assert m.perm_invalall() == 1
        c.close()


def test_gate_rejected_names_gate_and_pointer(m):
    m.gate_set("report", '{"type":"object","properties":{"risk_score":{"type":"number","exclusiveMinimum":0}}}')
    with pytest.raises(GateRejected) as ei:
        m.set("report:1", '{"risk_score":0}', 100, gate="report")
    assert ei.value.gate == "report"
    assert ei.value.pointer == "/risk_score"
    assert "0" in ei.value.reason
    assert isinstance(ei.value, redis.ResponseError)
    with pytest.raises(GateRejected) as ei:
        m.set("report:1", "not json", 100, gate="report")
    assert ei.value.gate == "report" and ei.value.pointer == "/"
    with pytest.raises(GateRejected) as ei:
        m.perm_set("p", '{"roles":1}')
    assert ei.value.gate == "perm"
    m.gate_del("report")


def test_lease_lost_is_false_not_an_exception(m):
    lease = m.fetch("lk", 10_000)
    assert lease.kind == "LEASE"
    m.set("other", "x", 100, tags=["t"])
    assert m.invaltag("t") == 1  # invalidation of a tag of the coming SET, after the lease
    assert m.set("lk", "old", 100, lease=lease.token, tags=["t"]) is False
    assert m.get("lk") is None
    lease2 = m.fetch("lk", 10_000)
    assert lease2.kind == "LEASE"
    assert m.set("lk", "new", 100, lease=lease2.token, tags=["t"]) is True


def test_pipeline(m):
    with m.pipeline(transaction=True) as p:
        p.set("pk", "v", 100, tags=["pt"])
        p.get("pk")
        p.tags("pk")
        p.tagcard("pt")
        p.tagscan("pt", 0)
        p.fetch("pk", 100)
        p.stats()
        res = p.execute()
    assert res[0] is True and res[1] == b"v" and res[2] == ["pt"] and res[3] == 1
    assert res[4][0] == 0 and res[5] == FetchReply("HIT", b"v") and isinstance(res[6], dict)
    with m.pipeline(transaction=False) as p:
        p.set("pk", "{}", 100, gate="json")
        p.gate_check("json", "not json")
        out = p.execute(raise_on_error=False)
    assert out[0] is True and isinstance(out[1], GateRejected)


def test_noperm_maps_to_redis_exception(server, r):
    r.execute_command("ACL", "SETUSER", "lim", "on", ">pw", "~a:*", "+@all")
    m = TCacheModule(server.client())
    m.set("b:1", "x", 100, tags=["t"])
    lim = TCacheModule(server.client(username="lim", password="pw"))
    with pytest.raises(redis.exceptions.NoPermissionError):
        lim.invaltag("t")
    assert m.get("b:1") == b"x"
    r.execute_command("ACL", "DELUSER", "lim")


@pytest.mark.parametrize("proto", PROTOCOLS)
def test_async_commands(server, r, proto):
    async def main() -> None:
        c = redis.asyncio.Redis(port=server.port, protocol=proto)
        m = TCacheModule(c)
        assert await m.set("ak", "v", 100, tags=["at"]) is True
        assert await m.get("ak") == b"v"
        assert await m.tags("ak") == ["at"]
        assert (await m.fetch("ak", 100)).kind == "HIT"
        assert (await m.stats())["entries"] == 1
        with pytest.raises(GateRejected):
            await m.gate_check("json", "{")
        async with m.pipeline() as p:
            p.get("ak")
            p.tagcard("at")
            assert await p.execute() == [b"v", 1]
        assert await m.invaltag("at") == 1
        await c.aclose()

    asyncio.run(main())
