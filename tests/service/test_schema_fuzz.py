"""Schemathesis over the OpenAPI schema, signed in, on SQLite and PostgreSQL: whatever the schema allows a client to
send, the answer is never a 5xx. Bounded and repeatable: a few derandomized examples per operation, no shrinking."""

from __future__ import annotations

from collections import Counter

import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, given, settings

from api.main import create_app
from core.settings import Settings
from tests.service.conftest import register

EXAMPLES = 5


def test_no_request_the_schema_allows_gets_a_server_error(db_url, tmp_path):
    app = create_app(Settings(var_dir=tmp_path / "var", database_url=db_url, reconcile_in_api=False,
                              signups_per_address=1000, logins_per_address=1000))
    with TestClient(app) as client:
        headers = register(client, "fuzz@example.com")
        client.post("/api/v1/datasets", json={"name": "d"}, headers=headers)
        schema = schemathesis.openapi.from_asgi("/api/v1/openapi.json", app)
        failures: list[str] = []
        statuses: Counter[int] = Counter()
        # signing out would end the fuzzing session for every operation after it
        operations = [op for op in (result.ok() for result in schema.get_all_operations())
                      if op.path != "/api/v1/auth/logout"]
        assert len(operations) >= 40
        for operation in operations:

            @given(case=operation.as_strategy())
            @settings(max_examples=EXAMPLES, deadline=None, phases=[Phase.explicit, Phase.generate],
                      suppress_health_check=list(HealthCheck), database=None, derandomize=True)
            def call(case) -> None:  # noqa: ANN001
                response = case.call(headers=headers)
                statuses[response.status_code] += 1
                if response.status_code >= 500:
                    failures.append(f"{case.method} {case.formatted_path} {case.body!r:.200}: "
                                    f"{response.status_code} {response.text[:200]}")

            call()
        assert failures == []
        print(dict(statuses))
        assert sum(n for code, n in statuses.items() if code < 300) >= 15  # signed in: real work, not just 401s
        assert statuses[401] < sum(statuses.values()) / 4
