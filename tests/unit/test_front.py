"""The coalescing front's rules that need no process: which requests are coalesced, what readers may send, when a
hung distribution is tried again."""

from extension.front.server import BLOB_PATH, COMPLETE, FAILED, STREAMING, Fetch, coalescible_query

DIGEST = "sha256:" + "ab" * 32


def test_only_blob_gets_by_sha256_digest_are_coalesced():
    assert BLOB_PATH.match(f"/v2/library/nginx/blobs/{DIGEST}")["name"] == "library/nginx"
    for path in (f"/v2/library/nginx/manifests/{DIGEST}", "/v2/library/nginx/manifests/latest",
                 "/v2/library/nginx/blobs/uploads/", f"/v2/library/nginx/blobs/{DIGEST[:-1]}",
                 f"/v2/library/nginx/blobs/{DIGEST}/x", "/v2/", "/healthz"):
        assert not BLOB_PATH.match(path), path


def test_containerds_ns_parameter_is_the_same_request():
    assert coalescible_query("")
    assert coalescible_query("ns=docker.io")
    assert coalescible_query("ns=127.0.0.1%3A5000")
    assert not coalescible_query("ns=docker.io&digest=x")
    assert not coalescible_query("_state=abc")


def test_readers_get_the_last_byte_only_once_the_digest_is_checked():
    f = Fetch((("a"), DIGEST, ""), "/v2/a/blobs/" + DIGEST, state=STREAMING, size=10, written=10)
    assert f.sendable() == 9
    f.state = FAILED
    assert f.sendable() == 9
    f.state = COMPLETE
    assert f.sendable() == 10
    empty = Fetch(("a", DIGEST, ""), "/", state=STREAMING, size=0, written=0)
    assert empty.sendable() == 0
    unknown = Fetch(("a", DIGEST, ""), "/", state=STREAMING, size=None, written=7)  # chunked: the end withheld
    assert unknown.sendable() == 7


def test_a_hung_distribution_is_tried_once_per_answer_timeout_until_it_answers():
    from extension.front.server import Backend

    now = [100.0]
    backend = Backend(20.0, clock=lambda: now[0])
    assert backend.may_try() and backend.may_try()  # answering: every request goes
    backend.hung()
    now[0] += 5
    assert not backend.may_try()  # within the timeout of the wait that failed: 502 at once
    now[0] += 16
    assert backend.may_try()  # one trial
    assert not backend.may_try()  # the others still get 502
    backend.answered()
    assert backend.may_try() and backend.may_try()
