"""OpenID Connect sign-in (authorization code + PKCE), with authlib and joserfc.

The provider's ID token is verified here (signature against its JWKS, issuer, audience,
expiry, nonce); what it vouches for becomes an `ExternalIdentity` for core to map.
"""

from __future__ import annotations

import secrets
import threading
import time
from typing import Any, cast

import httpx
from authlib.integrations.httpx_client import OAuth2Client
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet, KeySetSerialization

from core.config import Settings
from core.errors import NotAuthenticated, RuntimeFailure
from core.identity.external import ExternalIdentity

ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "ES256", "ES384", "EdDSA"]
METADATA_TTL = 3600.0


class OidcProvider:
    """One configured provider: discovery and keys cached, one client per sign-in."""

    def __init__(self, settings: Settings) -> None:
        if not (settings.oidc_issuer and settings.oidc_client_id):
            raise ValueError("OIDC needs SHIPDECK_OIDC_ISSUER and SHIPDECK_OIDC_CLIENT_ID")
        self.issuer = settings.oidc_issuer.rstrip("/")
        self.client_id = settings.oidc_client_id
        secret = settings.oidc_client_secret
        self._secret = secret.get_secret_value() if secret is not None else None
        self.scopes = settings.oidc_scopes
        self.username_claim = settings.oidc_username_claim
        self.groups_claim = settings.oidc_groups_claim
        self._lock = threading.Lock()
        self._metadata: dict[str, Any] | None = None
        self._fetched_at = 0.0
        self._keys: KeySet | None = None

    def _client(self, redirect_uri: str) -> OAuth2Client:
        return OAuth2Client(
            client_id=self.client_id,
            client_secret=self._secret,
            scope=self.scopes,
            redirect_uri=redirect_uri,
            code_challenge_method="S256",
            token_endpoint_auth_method="client_secret_basic" if self._secret else "none",
            timeout=10,
        )

    def metadata(self) -> dict[str, Any]:
        """The provider's discovery document (cached an hour)."""
        with self._lock:
            if self._metadata is None or time.monotonic() - self._fetched_at > METADATA_TTL:
                found = self._get(f"{self.issuer}/.well-known/openid-configuration")
                if str(found.get("issuer", "")).rstrip("/") != self.issuer:
                    raise RuntimeFailure("the OIDC discovery document names another issuer")
                self._metadata, self._fetched_at, self._keys = found, time.monotonic(), None
            return self._metadata

    def _key_set(self, refresh: bool = False) -> KeySet:
        metadata = self.metadata()
        with self._lock:
            if self._keys is None or refresh:
                found = self._get(str(metadata["jwks_uri"]))
                self._keys = KeySet.import_key_set(cast(KeySetSerialization, found))
            return self._keys

    def _get(self, url: str) -> dict[str, Any]:
        try:
            response = httpx.get(url, timeout=10)
            response.raise_for_status()
            body = response.json()
        except (httpx.HTTPError, ValueError) as exc:  # the provider is down or answers nonsense
            problem = type(exc).__name__
            raise RuntimeFailure(f"the OIDC provider did not answer: {problem}") from None
        if not isinstance(body, dict):
            raise RuntimeFailure("the OIDC provider answered something other than an object")
        return body

    def begin(self, redirect_uri: str) -> tuple[str, dict[str, str]]:
        """The provider URL to send the browser to, and what `finish` needs (kept server-side)."""
        verifier = secrets.token_urlsafe(48)
        nonce = secrets.token_urlsafe(24)
        state = secrets.token_urlsafe(32)
        with self._client(redirect_uri) as client:
            url, _ = client.create_authorization_url(
                self.metadata()["authorization_endpoint"],
                state=state,
                code_verifier=verifier,
                nonce=nonce,
            )
        return str(url), {
            "state": state,
            "code_verifier": verifier,
            "nonce": nonce,
            "redirect_uri": redirect_uri,
        }

    def finish(self, code: str, pending: dict[str, str]) -> ExternalIdentity:
        """Trade the code (with the PKCE verifier) for tokens; verify the ID token."""
        metadata = self.metadata()
        with self._client(pending["redirect_uri"]) as client:
            try:
                tokens = client.fetch_token(
                    metadata["token_endpoint"],
                    grant_type="authorization_code",
                    code=code,
                    code_verifier=pending["code_verifier"],
                )
            except Exception as exc:  # authlib raises OAuthError and httpx errors alike
                raise NotAuthenticated(f"the OIDC provider refused the sign-in: {exc}") from None
            claims = self._verify(str(tokens.get("id_token", "")), pending["nonce"])
            userinfo_url = metadata.get("userinfo_endpoint")
            if userinfo_url:
                response = client.get(str(userinfo_url))
                if response.status_code == 200:
                    extra = response.json()
                    if isinstance(extra, dict) and extra.get("sub") == claims["sub"]:
                        claims = {**extra, **claims}
        return self._identity(claims)

    def _verify(self, id_token: str, nonce: str) -> dict[str, Any]:
        if not id_token:
            raise NotAuthenticated("the OIDC provider sent no ID token")
        try:
            try:
                token = jwt.decode(id_token, self._key_set(), algorithms=ALGORITHMS)
            except JoseError:  # keys may have rotated: fetch them once more
                token = jwt.decode(id_token, self._key_set(refresh=True), algorithms=ALGORITHMS)
            jwt.JWTClaimsRegistry(
                leeway=60,
                iss={"essential": True, "value": self.issuer},
                aud={"essential": True, "value": self.client_id},
                sub={"essential": True},
                exp={"essential": True},
                nonce={"essential": True, "value": nonce},
            ).validate(token.claims)
        except (JoseError, ValueError) as exc:
            raise NotAuthenticated(f"the ID token is not valid: {exc}") from None
        return dict(token.claims)

    def _identity(self, claims: dict[str, Any]) -> ExternalIdentity:
        raw_groups = claims.get(self.groups_claim) or []
        if isinstance(raw_groups, str):
            raw_groups = [raw_groups]
        groups = (
            [g for g in raw_groups if isinstance(g, str)] if isinstance(raw_groups, list) else []
        )
        username = claims.get(self.username_claim) or claims.get("email") or claims["sub"]
        return ExternalIdentity(
            issuer=self.issuer,
            subject=str(claims["sub"]),
            username=str(username),
            groups=groups,
        )
