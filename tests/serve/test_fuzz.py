"""A bounded fuzz run of the served API from its own OpenAPI schema (schemathesis): every
operation, with bodies, parameters and headers made from the schema, answers within the schema
(status codes, content types, response bodies and headers as declared) and never with a server
error.

Two of schemathesis' checks do not apply to this API and are left out: a schema cannot say which
bytes decode as an image or a WAV, or which characters a model's vocabulary holds, so a
schema-valid body may still be rightly refused with 400 (positive_data_acceptance); and a
multipart field sent once is one item of its declared array (negative_data_rejection)."""

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, settings  # noqa: E402
from schemathesis.checks import negative_data_rejection, positive_data_acceptance  # noqa: E402

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def api_schema(served):
    return schemathesis.openapi.from_url(f"{served.url}/openapi.json")


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_the_api_holds_to_its_schema(case):
    case.call_and_validate(excluded_checks=[positive_data_acceptance, negative_data_rejection])
