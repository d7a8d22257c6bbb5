def test_synthetic_chat_streams(syn_daemon):
    with syn_daemon.client() as c:
        rid = c.send("chat", model="syn:chat", messages=[{"role": "user", "content": "one two three"}])
        evs = list(c.events(rid))
    kinds = [e["ev"] for e in evs]
    assert kinds[0] == "queued" and kinds[-1] == "done"
    assert "".join(e["text"] for e in evs if e["ev"] == "token") == "one two three "
