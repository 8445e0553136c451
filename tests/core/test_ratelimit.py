"""Attempt limits (core.ratelimit) on the shared Redis cache: counted per scope and key in fixed
windows; the view decorator counts POSTs only and answers 429 with Retry-After."""

import pytest
from django.http import HttpResponse

from core.ratelimit import attempt_allowed, client_ip, posts_rate_limited


def test_attempts_are_allowed_up_to_the_limit_then_refused_until_the_window_ends():
    answers = [attempt_allowed(scope="test", key="k1", limit=3, window=600) for _ in range(5)]

    assert [allowed for allowed, _ in answers] == [True, True, True, False, False]
    assert all(0 < retry_after <= 600 for _, retry_after in answers)


def test_scopes_and_keys_are_counted_apart():
    assert attempt_allowed(scope="test", key="a", limit=1, window=600)[0]
    assert not attempt_allowed(scope="test", key="a", limit=1, window=600)[0]

    assert attempt_allowed(scope="test", key="b", limit=1, window=600)[0]
    assert attempt_allowed(scope="other", key="a", limit=1, window=600)[0]


def test_the_client_is_its_remote_address_never_a_forwarded_header(rf):
    request = rf.get("/", REMOTE_ADDR="192.0.2.7", HTTP_X_FORWARDED_FOR="198.51.100.1")

    assert client_ip(request) == "192.0.2.7"


@pytest.fixture
def limited_view(settings):
    settings.TEST_RATE_LIMIT = 2
    settings.TEST_RATE_WINDOW = 600
    calls = []

    @posts_rate_limited(
        scope="test-view",
        limit_setting="TEST_RATE_LIMIT",
        window_setting="TEST_RATE_WINDOW",
        template="cards/rate_limited.html",
    )
    def view(request):
        calls.append(request.method)
        return HttpResponse("ok")

    view.calls = calls
    return view


def test_posts_over_the_limit_get_a_429_page_with_retry_after_and_never_reach_the_view(
    rf, limited_view
):
    answers = [limited_view(rf.post("/", REMOTE_ADDR="192.0.2.1")) for _ in range(3)]

    assert [response.status_code for response in answers] == [200, 200, 429]
    refused = answers[-1]
    assert 0 < int(refused["Retry-After"]) <= 600
    assert "too many attempts" in refused.content.decode()
    assert limited_view.calls == ["POST", "POST"]
    # Another client is not affected, and GETs are never counted.
    assert limited_view(rf.post("/", REMOTE_ADDR="192.0.2.2")).status_code == 200
    assert limited_view(rf.get("/", REMOTE_ADDR="192.0.2.1")).status_code == 200


def test_the_limit_is_read_from_settings_at_each_request(rf, limited_view, settings):
    settings.TEST_RATE_LIMIT = 1
    assert limited_view(rf.post("/", REMOTE_ADDR="192.0.2.3")).status_code == 200
    assert limited_view(rf.post("/", REMOTE_ADDR="192.0.2.3")).status_code == 429

    settings.TEST_RATE_LIMIT = 5
    assert limited_view(rf.post("/", REMOTE_ADDR="192.0.2.3")).status_code == 200
