"""The pre-send re-check's reads for a whole claimed batch, made together.

Just before a write leaves, the worker checks again that its initiator and submitter still have the
tenant, that its API token still names it, and that the patient's consent still covers it
(`services.decide`). Asked per write, that is up to three queries per write; asked per batch, it is one
query per tenant of the batch for its people, one per tenant for its tokens and one for every consent
the batch needs. The decisions are the same functions either way (`send_authorization_lapse`,
`consent_check`); only where their rows come from differs.

The batch is read right after it is claimed and handed to the pool's free threads at once, so the rows
are as fresh as a per-write read would be.
"""

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from writeback.models import Consent, Write
from writeback.services.access import users_with_access
from writeback.services.consents import consents_on_file_many
from writeback.services.tokens import Lapsed, token_lapses


@dataclass
class SendReads:
    # tenant id -> the batch's initiators and submitters who still may act on it
    standing: dict[int, set[int]] = field(default_factory=dict)
    # (token id, tenant id) -> why the token may no longer act on the tenant, or None
    tokens: dict[tuple[int, int], Lapsed | None] = field(default_factory=dict)
    # (tenant id, patient ref) -> the patient's consents, newest first (tenants that require consent)
    consents: dict[tuple[int, str], list[Consent]] = field(default_factory=dict)

    def consents_for(self, write: Write) -> list[Consent]:
        return self.consents.get((write.tenant_id, write.patient_ref), [])


def load_send_reads(writes: Iterable[Write]) -> SendReads:
    """Reads what the pre-send re-check of `writes` needs. Each write must carry its tenant and event
    (the claim selects both)."""
    writes = list(writes)
    reads = SendReads()
    people: dict[int, set[int]] = defaultdict(set)
    tokens: dict[int, set[int]] = defaultdict(set)
    patients: dict[int, set[str]] = defaultdict(set)
    tenants = {}
    for w in writes:
        tenants[w.tenant_id] = w.tenant
        event = w.event
        people[w.tenant_id] |= {pk for pk in (event.initiator_id, event.submitter_id) if pk is not None}
        if event.submitted_token_id is not None:
            tokens[w.tenant_id].add(event.submitted_token_id)
        if w.tenant.consent_required:
            patients[w.tenant_id].add(w.patient_ref)
    for tenant_id, tenant in tenants.items():
        asked = people[tenant_id]
        reads.standing[tenant_id] = users_with_access(asked, tenant) if asked else set()
        if tokens[tenant_id]:
            for token_id, lapse in token_lapses(tokens[tenant_id], tenant).items():
                reads.tokens[(token_id, tenant_id)] = lapse
    reads.consents = consents_on_file_many(patients)
    return reads
