"""`Authorization: Token <key>`: API tokens stored as hashes, scoped to tenants."""

from django.utils import timezone
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions

from writeback import logcontext
from writeback.models import ApiToken
from writeback.models.tokens import hash_key
from writeback.services.permissions import ActionRefused, actor_annotations, prime_actor, refuse


class ApiTokenAuthentication(authentication.BaseAuthentication):
    keyword = "Token"

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).split()
        if not header or header[0].lower() != self.keyword.lower().encode():
            return None
        if len(header) != 2:
            raise exceptions.AuthenticationFailed("Invalid token header: expected 'Token <key>'.")
        try:
            key = header[1].decode()
        except UnicodeError:
            raise exceptions.AuthenticationFailed("Invalid token header: the key has invalid characters.")
        # The user's roles come with the token (no query of their own for the request's role checks).
        token = (
            ApiToken.objects.select_related("user")
            .annotate(**actor_annotations("user_id"))
            .filter(key_hash=hash_key(key))
            .first()
        )
        if token is None:
            raise exceptions.AuthenticationFailed("Invalid or revoked token.")
        if token.revoked_at is not None or not token.user.is_active:
            _refuse_known_token(request, token)
        now = timezone.now()
        # Touch at most once a minute: a hot token must not turn every request into an UPDATE.
        if token.last_used_at is None or (now - token.last_used_at).total_seconds() > 60:
            ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
        prime_actor(token.user, token)
        return token.user, token

    def authenticate_header(self, request) -> str:
        return self.keyword


def _refuse_known_token(request, token: ApiToken) -> None:
    """A real key of a revoked token or of a deactivated account is audited (who still tries to act)
    before the 401; an unknown key is not, since anyone can make one up."""
    if token.revoked_at is not None:
        reason, rule = f"API token {token.prefix}… was revoked", "token-revoked"
    else:
        reason, rule = f"the account {token.user.get_username()} is deactivated", "account-inactive"
    try:
        refuse(
            token.user,
            "authenticate",
            reason,
            rule=rule,
            object_type="api_token",
            object_id=token.prefix,
            request_id=logcontext.request_id(request),
        )
    except ActionRefused:
        raise exceptions.AuthenticationFailed("Invalid or revoked token.")


class ApiTokenScheme(OpenApiAuthenticationExtension):
    """Describes `Authorization: Token <key>` in the OpenAPI schema."""

    target_class = ApiTokenAuthentication
    name = "ApiToken"

    def get_security_definition(self, auto_schema):
        return {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": "`Token <key>`; keys come from `manage.py create_api_token`.",
        }
