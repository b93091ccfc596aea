"""Names shared by the test fixtures and the tests that check what those fixtures created."""

PROJECT = "test-project"
REGION = "us-central1"
BUCKET = "fanout-reports"
