# -*- coding: utf-8 -*-
# Copyright: glm-deploy developers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""A client of the Lambda Cloud API over Ansible's own URL helper (`open_url`): no SDK, nothing to install.

What Lambda's OpenAPI description says and this follows: the API lives under `<api_url>/api/v1`; a request
authenticates with `Authorization: Bearer <key>`; a success is `{"data": ...}` and a failure
`{"error": {"code", "message", "suggestion"}}`, where only `code` is stable, so what a caller is told is chosen
by the code (`LambdaApiError.code`). Requests are limited to about one per second (a launch: one per 12 s); a 429
is waited out and retried, for `Retry-After` seconds when the answer says so, a bounded number of times, never
longer than `rate_limit_max_wait` per wait.

The API key is only ever put in the Authorization header: no message, repr or record of this module holds it.
Pure of glm_deploy, like the rest of module_utils, so a module that runs anywhere can use it.
"""

from __future__ import absolute_import, division, print_function

import email.utils
import json
import os
import socket
import time
from urllib.error import HTTPError, URLError

from ansible.module_utils.urls import ConnectionError as UrlConnectionError
from ansible.module_utils.urls import open_url

__metaclass__ = type

DEFAULT_API_URL = "https://cloud.lambda.ai"
API_KEY_ENV = "LAMBDA_API_KEY"
API_KEYS_PAGE = "https://cloud.lambda.ai/api-keys"
RATE_LIMITED = 429

# What a person does about each error code of the API (Lambda's OpenAPI description, components.schemas.ApiError*).
_ADVICE = {
    "global/quota-exceeded": "ask Lambda Support to raise the quota, or terminate instances you no longer need",
    "instance-operations/launch/insufficient-capacity": (
        "GET /api/v1/instance-types lists the regions with capacity for each instance type: launch in one of them"
    ),
    "global/object-does-not-exist": "check the name or id: it does not exist in this account",
    "global/account-inactive": "verify the account's email address and payment method in the Lambda Cloud console",
    "global/invalid-parameters": "the request does not match the API's description: this is a bug of its caller",
}


class LambdaApiError(Exception):
    """A request the Lambda Cloud API refused or could not answer; `code` is the API's error.code (None when the
    answer had none), `status` the HTTP status (None when no answer came)."""

    def __init__(self, message, code=None, status=None):
        super(LambdaApiError, self).__init__(message)
        self.message = message
        self.code = code
        self.status = status


def _one_line(text):
    return " ".join(str(text).split())


def api_key_from(key_file=None, environ=None):
    """The API key and where it came from (for messages: never the key itself).

    `key_file` (an inventory or module option) wins over the environment's LAMBDA_API_KEY; the file holds the key
    on its first line.
    """
    environ = os.environ if environ is None else environ
    if key_file:
        origin = "the key file %s (option api_key_file)" % key_file
        try:
            with open(key_file, "r") as handle:
                key = handle.readline().strip()
        except (IOError, OSError) as error:
            raise LambdaApiError(
                "cannot read the Lambda Cloud API key file %s (option api_key_file): %s"
                % (key_file, error.strerror or error)
            ) from None
    else:
        origin = API_KEY_ENV
        key = (environ.get(API_KEY_ENV) or "").strip()
        if not key:
            raise LambdaApiError(
                "no Lambda Cloud API key: set %s (or the option api_key_file, LAMBDA_API_KEY_FILE) to a key "
                "from %s" % (API_KEY_ENV, API_KEYS_PAGE)
            )
    if not key:
        raise LambdaApiError("%s is empty: put a key from %s on its first line" % (origin, API_KEYS_PAGE))
    if any(character.isspace() for character in key):
        raise LambdaApiError(
            "the Lambda Cloud API key in %s contains white space: a key is one word, from %s" % (origin, API_KEYS_PAGE)
        )
    return key, origin


def retry_after_seconds(value, now=None):
    """Seconds a `Retry-After` header asks for (delta-seconds or an HTTP-date), or None when it says nothing usable."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    now = time.time() if now is None else now
    return max(0.0, when.timestamp() - now)


def error_from_answer(method, path, status, body, key_origin):
    """The LambdaApiError for an HTTP error answer: its message chosen by the API's error.code, on one line."""
    code = message = suggestion = None
    try:
        error = json.loads(body.decode("utf-8") if isinstance(body, bytes) else body)["error"]
        code, message, suggestion = error.get("code"), error.get("message"), error.get("suggestion")
    except (ValueError, TypeError, KeyError, AttributeError):
        pass
    request = "%s %s" % (method, path)
    if code is None:
        excerpt = _one_line(body.decode("utf-8", "replace") if isinstance(body, bytes) else body or "")[:200]
        return LambdaApiError(
            "the Lambda Cloud API answered %s with HTTP %s and no Lambda error body (%r)" % (request, status, excerpt),
            status=status,
        )
    said = _one_line(" ".join(part for part in (message, suggestion) if part))
    if code == "global/invalid-api-key":
        fix = "set %s to" % API_KEY_ENV if key_origin == API_KEY_ENV else "put in that file"
        text = "the Lambda Cloud API refused the API key from %s (%s: %s); %s a valid key from %s" % (
            key_origin,
            code,
            said,
            fix,
            API_KEYS_PAGE,
        )
    elif code.startswith("provider/"):
        text = "an upstream provider of Lambda Cloud failed %s (HTTP %s, %s: %s); try again shortly" % (
            request,
            status,
            code,
            said,
        )
    else:
        text = "the Lambda Cloud API refused %s (HTTP %s, %s: %s)" % (request, status, code, said)
        if code in _ADVICE:
            text += "; " + _ADVICE[code]
    return LambdaApiError(_one_line(text), code=code, status=status)


class LambdaCloudClient:
    """Requests to one Lambda Cloud API endpoint with one key. `sleep` and `opener` are seams for tests."""

    def __init__(
        self,
        api_key,
        *,
        key_origin=API_KEY_ENV,
        api_url=DEFAULT_API_URL,
        timeout=30,
        validate_certs=True,
        rate_limit_retries=5,
        rate_limit_max_wait=60,
        sleep=time.sleep,
        opener=open_url,
    ):
        self._api_key = api_key
        self.key_origin = key_origin
        self.api_url = (api_url or DEFAULT_API_URL).rstrip("/")
        self.timeout = timeout
        self.validate_certs = validate_certs
        self.rate_limit_retries = rate_limit_retries
        self.rate_limit_max_wait = rate_limit_max_wait
        self._sleep = sleep
        self._open = opener
        # (method, path, seconds) of every wait on a 429, for callers that report them
        self.rate_limit_waits = []

    def __repr__(self):
        return "LambdaCloudClient(api_url=%r, key from %s)" % (self.api_url, self.key_origin)

    def request(self, method, path, body=None):
        """The `data` of the answer to `method path` (path from /api/v1 on), waiting out 429s as documented above."""
        url = self.api_url + path
        headers = {"Authorization": "Bearer " + self._api_key, "Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body)
            headers["Content-Type"] = "application/json"
        attempt = 0
        while True:
            try:
                response = self._open(
                    url,
                    method=method,
                    data=data,
                    headers=headers,
                    timeout=self.timeout,
                    validate_certs=self.validate_certs,
                    http_agent="glm-deploy",
                    # the key goes to api_url only: no redirect is followed, no ~/.netrc login replaces it
                    follow_redirects="none",
                    use_netrc=False,
                )
                return self._data_of(method, path, response.read())
            except HTTPError as error:
                answer = error.read() if error.fp is not None else b""
                if error.code != RATE_LIMITED:
                    raise error_from_answer(method, path, error.code, answer, self.key_origin) from None
                attempt += 1
                self._wait_out_rate_limit(method, path, error, answer, attempt)
            except (URLError, UrlConnectionError, socket.timeout, OSError) as error:
                reason = getattr(error, "reason", None) or error
                raise LambdaApiError(
                    "cannot reach the Lambda Cloud API at %s (%s %s): %s; check api_url and the network"
                    % (self.api_url, method, path, _one_line(reason))
                ) from None

    def _wait_out_rate_limit(self, method, path, error, answer, attempt):
        limited = error_from_answer(method, path, RATE_LIMITED, answer, self.key_origin)
        code = limited.code or "no error code"
        if attempt > self.rate_limit_retries:
            waited = sum(wait[2] for wait in self.rate_limit_waits)
            raise LambdaApiError(
                "the Lambda Cloud API still rate-limits %s %s (HTTP 429, %s) after %d retries over %.0f s; it allows "
                "about one request per second (a launch: one per 12 s): run fewer clients with this key, or raise "
                "rate_limit_retries" % (method, path, code, self.rate_limit_retries, waited),
                code=limited.code,
                status=RATE_LIMITED,
            )
        asked = retry_after_seconds(error.headers.get("Retry-After") if error.headers else None)
        seconds = asked if asked is not None else min(2.0 ** (attempt - 1), float(self.rate_limit_max_wait))
        if seconds > self.rate_limit_max_wait:
            raise LambdaApiError(
                "the Lambda Cloud API rate-limits %s %s (HTTP 429, %s) and asks to wait %.0f s, more than "
                "rate_limit_max_wait (%s s): try again later, or raise rate_limit_max_wait"
                % (method, path, code, seconds, self.rate_limit_max_wait),
                code=limited.code,
                status=RATE_LIMITED,
            )
        self.rate_limit_waits.append((method, path, seconds))
        self._sleep(seconds)

    def _data_of(self, method, path, body):
        try:
            document = json.loads(body.decode("utf-8") if isinstance(body, bytes) else body)
        except ValueError:
            document = None
        if not isinstance(document, dict) or "data" not in document:
            raise LambdaApiError(
                'the Lambda Cloud API answered %s %s with something other than {"data": ...} (%r)'
                % (method, path, _one_line(body.decode("utf-8", "replace") if isinstance(body, bytes) else body)[:200])
            )
        return document["data"]

    def list_instances(self):
        """GET /api/v1/instances: every instance of the account (a list of Instance objects)."""
        return self.request("GET", "/api/v1/instances")

    def get_instance(self, instance_id):
        return self.request("GET", "/api/v1/instances/%s" % instance_id)

    def list_instance_types(self):
        """GET /api/v1/instance-types: {name: {instance_type, regions_with_capacity_available}}."""
        return self.request("GET", "/api/v1/instance-types")
