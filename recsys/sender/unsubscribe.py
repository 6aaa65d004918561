"""Unsubscribe links of offer emails (RFC 2369 `List-Unsubscribe`, RFC 8058 one-click), filled in at
send time by the reference sender's adapters.

Why at send time: a campaign renders each message once per distinct offer and fills first names in
bulk SQL (`recsys.campaign.messages`), before offer ids exist; the link names the offer and carries
a token signed with a secret that belongs with the senders and the shop's endpoint, not with the
nightly scoring. So an email body holds UNSUBSCRIBE_MARKER where the template put `unsubscribe_url`,
and `UnsubscribeLinks.apply` replaces it with the offer's link and adds the headers:

- `RECSYS_UNSUBSCRIBE_URL` set (an https URL with `{offer_id}` and `{token}`): the link is that URL;
  `List-Unsubscribe: <https URL>` (plus `<mailto:...>` when `RECSYS_UNSUBSCRIBE_MAILBOX` is set)
  and `List-Unsubscribe-Post: List-Unsubscribe=One-Click`. The token is the hex HMAC-SHA256 of the
  decimal offer id with `RECSYS_UNSUBSCRIBE_SECRET`: the endpoint recomputes it, compares in constant
  time, then calls `recsys.record_offer_event(offer_id, 'unsubscribed', now(), null)`.
- no URL: a mailto link to `RECSYS_UNSUBSCRIBE_MAILBOX` (else the From address) whose subject names
  the offer (and its token when a secret is set), and `List-Unsubscribe: <mailto:...>` only: RFC 8058
  one-click needs an https URL, so `List-Unsubscribe-Post` is left out rather than sent invalid.

Any sender in another language does the same: replace UNSUBSCRIBE_MARKER in the body (HTML-escaped)
and set the two headers.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import html
import urllib.parse

from recsys.campaign.messages import UNSUBSCRIBE_MARKER
from recsys.config.settings import Settings
from recsys.errors import RecsysError
from recsys.sender.protocol import Offer

ONE_CLICK = "List-Unsubscribe=One-Click"


def unsubscribe_token(secret: str, offer_id: int) -> str:
    """The token of an offer's unsubscribe link: hex HMAC-SHA256 of the decimal offer id."""
    return hmac.new(secret.encode("utf-8"), str(offer_id).encode("ascii"), hashlib.sha256).hexdigest()


@dataclasses.dataclass(frozen=True)
class UnsubscribeLinks:
    """Builds each email offer's unsubscribe link and headers from the settings."""

    url_template: str
    """https URL with {offer_id} and {token}, or empty (mailto only)."""
    secret: str
    """Key of the token (empty: mailto links without a token)."""
    mailbox: str
    """Address of the mailto link."""
    mailto_beside_url: bool = False
    """List the mailto in List-Unsubscribe beside the https URL (an unsubscribe mailbox was configured)."""

    @classmethod
    def from_settings(cls, settings: Settings) -> UnsubscribeLinks:
        """Checked once when a sender starts, so a bad setting stops it before any offer is claimed."""
        url, secret = settings.unsubscribe_url.strip(), settings.unsubscribe_secret
        if url:
            if not url.startswith("https://"):
                raise RecsysError(
                    f"RECSYS_UNSUBSCRIBE_URL {url!r}: expected an https:// URL (RFC 8058 one-click needs https)"
                )
            if any(c.isspace() or c in '<>"' for c in url):
                raise RecsysError(f"RECSYS_UNSUBSCRIBE_URL {url!r}: no spaces, quotes or angle brackets in a URL")
            try:
                url.format(offer_id=1, token="t")
            except (KeyError, IndexError, ValueError) as e:
                raise RecsysError(
                    f"RECSYS_UNSUBSCRIBE_URL {url!r}: only {{offer_id}} and {{token}} may appear in braces ({e!r})"
                ) from e
            missing = [name for name in ("{offer_id}", "{token}") if name not in url]
            if missing:
                raise RecsysError(
                    f"RECSYS_UNSUBSCRIBE_URL {url!r}: must contain {' and '.join(missing)} "
                    "(the endpoint verifies the token before it unsubscribes anyone)"
                )
            if not secret:
                raise RecsysError(
                    "RECSYS_UNSUBSCRIBE_URL has a {token}: set RECSYS_UNSUBSCRIBE_SECRET to the secret "
                    "the unsubscribe endpoint verifies it with"
                )
        mailbox = (settings.unsubscribe_mailbox or settings.smtp_from).strip()
        if "@" not in mailbox or any(c in mailbox for c in "\r\n<>, "):
            raise RecsysError(
                f"unsubscribe mailbox {mailbox!r}: expected a plain address "
                "(RECSYS_UNSUBSCRIBE_MAILBOX, else RECSYS_SMTP_FROM)"
            )
        return cls(
            url_template=url, secret=secret, mailbox=mailbox, mailto_beside_url=bool(settings.unsubscribe_mailbox)
        )

    def token(self, offer_id: int) -> str | None:
        return unsubscribe_token(self.secret, offer_id) if self.secret else None

    def https_url(self, offer_id: int) -> str | None:
        if not self.url_template:
            return None
        return self.url_template.format(offer_id=offer_id, token=self.token(offer_id))

    def mailto(self, offer_id: int) -> str:
        token = self.token(offer_id)
        subject = f"unsubscribe {offer_id}" + (f" {token}" if token else "")
        return f"mailto:{self.mailbox}?subject={urllib.parse.quote(subject)}"

    def headers(self, offer_id: int) -> dict[str, str]:
        """`List-Unsubscribe` (and `List-Unsubscribe-Post` when there is an https URL) of one offer."""
        url = self.https_url(offer_id)
        if url is None:
            return {"List-Unsubscribe": f"<{self.mailto(offer_id)}>"}
        uris = [f"<{url}>"]
        if self.mailto_beside_url:
            uris.append(f"<{self.mailto(offer_id)}>")
        return {"List-Unsubscribe": ", ".join(uris), "List-Unsubscribe-Post": ONE_CLICK}

    def apply(self, offer: Offer) -> Offer:
        """The offer with its link in the body and its headers; other channels come back unchanged."""
        if offer.channel != "email":
            return offer
        link = self.https_url(offer.offer_id) or self.mailto(offer.offer_id)
        body = offer.body.replace(UNSUBSCRIBE_MARKER, html.escape(link, quote=True))
        return dataclasses.replace(
            offer, body=body, unsubscribe_url=link, headers=tuple(self.headers(offer.offer_id).items())
        )
