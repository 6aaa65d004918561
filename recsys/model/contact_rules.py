"""`ContactRules`: the campaign's hard contact rules (frequency caps, the cooldown after a
purchase) as the simulated nights of `recsys.model.env` apply them. Plain data: no gymnasium or
torch import, so the stages that only pass the rules on stay light."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from recsys.config.catalog import ALLOWED_CHANNELS

if TYPE_CHECKING:
    from recsys.config.rules import CampaignRules

WINDOW_NIGHTS = 7
"""offers_last_7d counts the offers of this many previous nights."""


@dataclass(frozen=True)
class ContactRules:
    """The campaign's hard contact rules, as the simulated nights apply them: a user the rules
    block tonight is sent nothing, whatever the policy chooses, as scoring skips them
    (`recsys.campaign.decide.allowed_mask`). Without them the simulation lets a policy send every
    night, so a policy trained there paces itself as if uncapped and the cap then cuts its sends.

    - `cap_total`: at most this many offers in the last `cap_window` nights (None: no cap). The
      offers of the nights before an episode are known only as the 7-night count of the
      observation, spread evenly over those nights; a window longer than 7 nights counts none from
      further back.
    - `cap_per_channel`: the same per channel, counting the episode's own sends only.
    - `cooldown_nights`: nothing for this many nights after a purchase (0: off); a purchase before
      the episode counts by the observation's days since the last purchase.
    """

    cap_total: int | None = None
    cap_window: int = WINDOW_NIGHTS
    cap_per_channel: tuple[int | None, ...] = (None,) * len(ALLOWED_CHANNELS)
    cooldown_nights: int = 0

    def __post_init__(self) -> None:
        if self.cap_total is not None and self.cap_total < 1:
            raise ValueError(f"cap_total must be None or >= 1, got {self.cap_total}")
        if self.cap_window < 1:
            raise ValueError(f"cap_window must be >= 1 night, got {self.cap_window}")
        if len(self.cap_per_channel) != len(ALLOWED_CHANNELS):
            raise ValueError(f"cap_per_channel needs one entry per channel {ALLOWED_CHANNELS}")
        if self.cooldown_nights < 0:
            raise ValueError(f"cooldown_nights must be >= 0, got {self.cooldown_nights}")

    @classmethod
    def of(cls, rules: CampaignRules) -> ContactRules:
        """From the campaign rules (`recsys.config.rules.CampaignRules`)."""
        per_channel = rules.cap_per_channel or {}
        return cls(
            cap_total=rules.cap_total,
            cap_window=rules.cap_window_days,
            cap_per_channel=tuple(per_channel.get(ch) for ch in ALLOWED_CHANNELS),
            cooldown_nights=rules.cooldown_days,
        )

    @property
    def can_block(self) -> bool:
        """Whether some rule can block a send."""
        capped = self.cap_total is not None or any(c is not None for c in self.cap_per_channel)
        return capped or self.cooldown_nights > 0
