"""The 2022 "MMU role refactoring" series as data: its merged patches and its naming debate.

Paolo Bonzini's series "KVM: MMU: MMU role refactoring" was posted as v1 (23 patches,
2022-02-04), v2 (25 patches, 2022-02-21) and v3 (22 patches: 21 by Paolo, 1 by Sean
Christopherson; 2022-04-14), and merged for **Linux 5.19**: the 21 patches of
:data:`PATCHES` appear, in this order, in Linus's master on 2022-05-27 (facts §0.3,
[LINUS-0527]).  v3's "KVM: x86/mmu: remove valid from extended role" is *not* among them;
``ext.valid`` still exists in 5.19, 6.4 and mainline.  Two patches by Lai Jiangshan
follow immediately and belong to the story (``role.passthrough``), so they are listed as
:data:`FOLLOW_UPS`.

Every entry names its source: the tags are those of the fact sheet
(``/work/shared/reference/kvm-mmu-facts.md`` §0.2), e.g. ``[RR-v2-15]`` = "[PATCH v2
15/25] KVM: x86/mmu: remove extended bits from mmu_role, rename field", 2022-02-21.  The
one-paragraph summaries are ours, written from the v3 postings' commit messages and diffs
(kvm@vger.kernel.org, 2022-04-14, Message-Ids ``<20220414074000.31438-N-pbonzini@redhat.com>``);
nothing is quoted from the kernel's GPL code.

``demo`` names the before/after comparison :mod:`mmu.book.views.series_view` can show for a
patch -- *only* where the teaching model has something visible (a role word, a field of
``struct kvm_mmu``).  "before" is always the 5.18 model (:mod:`mmu.kvm.legacy`) and "after" the
5.19 model (:mod:`mmu.kvm.roles`): the model has no state between two patches of the series.
"""
from __future__ import annotations

import dataclasses

__all__ = ["Patch", "PATCHES", "FOLLOW_UPS", "POSTINGS", "Message", "NAMING_DEBATE",
           "NameChange", "NAME_CHANGES", "NameCandidate", "NAME_CANDIDATES", "patch",
           "KINDS"]

#: What a patch does, in the words of the reviewer's table.
KINDS = {
    "refactor": "same behaviour, different code shape",
    "nfc": "no functional change intended; a field or function replaced",
    "deliberate": "deliberate change of a role bit (visible in the model)",
    "fix": "fix or hardening of a corner case",
    "comment": "comment only",
}


@dataclasses.dataclass(frozen=True)
class Patch:
    """One merged commit.  ``hash`` is the mainline (torvalds/linux) abbreviation."""

    order: int                    # position in the merged series, 1-based
    hash: str
    subject: str
    author: str
    kind: str                     # a key of KINDS
    what: str                     # what it changes, in plain words
    touches: tuple[str, ...]      # kernel names it adds, removes or changes
    demo: str | None = None       # a key of mmu.book.views.series_view.DEMOS, or None
    sources: tuple[str, ...] = ("[LINUS-0527]",)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind={self.kind!r}: allowed {tuple(KINDS)}")
        if len(self.hash) != 12 or any(c not in "0123456789abcdef" for c in self.hash):
            raise ValueError(f"hash={self.hash!r}: allowed 12 lower-case hex digits")

    @property
    def title(self) -> str:
        return f"{self.hash} {self.subject}"


_P = "Paolo Bonzini"

PATCHES: tuple[Patch, ...] = (
    Patch(1, "daed87b8767c", "KVM: x86/mmu: nested EPT cannot be used in SMM", _P, "fix",
          "kvm_calc_shadow_ept_root_page_role stops copying role.smm from root_mmu and "
          "WARNs if the vCPU is in SMM instead: KVM does not support SMM transfer monitors "
          "(nor VMX's \"entry to SMM\" control), so a nested-EPT root never has smm=1.  "
          "First step towards a nested-EPT role that depends on nothing but the EPTP.",
          ("kvm_calc_shadow_ept_root_page_role", "role.base.smm"), "ept_smm"),
    Patch(2, "82ffa13f7933", "KVM: x86/mmu: constify uses of struct kvm_mmu_role_regs", _P,
          "refactor",
          "struct kvm_mmu_role_regs (the masked CR0/CR4/EFER) is computed once and only "
          "read: pass it as a const pointer everywhere.",
          ("struct kvm_mmu_role_regs",)),
    Patch(3, "39e7e2bf321a", "KVM: x86/mmu: pull computation of kvm_mmu_role_regs to "
          "kvm_init_mmu", _P, "refactor",
          "kvm_init_mmu computes the role registers once (vcpu_to_role_regs) and passes "
          "them to init_kvm_tdp_mmu / init_kvm_softmmu / init_kvm_nested_mmu, which used "
          "to compute them each.",
          ("kvm_init_mmu", "vcpu_to_role_regs")),
    Patch(4, "25cc05652cd6", "KVM: x86/mmu: rephrase unclear comment", _P, "comment",
          "One comment in paging_tmpl.h (FNAME(prefetch_invalid_gpte)) now says what "
          "happens when accessed bits *are* supported: only accessed gptes are prefetched.",
          ("FNAME(prefetch_invalid_gpte)",)),
    Patch(5, "6819af7597d8", "KVM: x86: Clean up and document nested #PF workaround",
          "Sean Christopherson", "refactor",
          "Replaces the per-vendor hack for KVM's #PF => #PF => #DF workaround while L2 "
          "runs with one explicit, documented check in kvm_inject_emulated_page_fault, so "
          "the MMU's inject_page_fault callback no longer has to be overridden by nested "
          "code (it also fixed nSVM's KVM_SET_NESTED_STATE and nVMX with "
          "allow_smaller_maxphyaddr).  Not modelled.",
          ("kvm_inject_emulated_page_fault", "inject_page_fault"),
          sources=("[LINUS-0527]", "[RR-v3-0]")),
    Patch(6, "b89805082adf", "KVM: x86/mmu: remove \"bool base_only\" arguments", _P,
          "refactor",
          "The base_only flag of the role builders was always false once "
          "kvm_mmu_calc_root_page_role was gone (5.18's kvm_mmu_new_pgd uses the stored "
          "role); kvm_calc_mmu_role_ext is folded into kvm_calc_mmu_role_common.",
          ("kvm_calc_mmu_role_common", "kvm_calc_mmu_role_ext")),
    Patch(7, "e5ed0fb01004", "KVM: x86/mmu: split cpu_role from mmu_role", _P, "nfc",
          "The heart of the series.  struct kvm_mmu gains cpu_role, computed by the new "
          "kvm_calc_cpu_role from CR0/CR4/EFER, SMM and guest mode: it describes the "
          "guest's page tables and feeds the walker and the is_* accessors.  mmu_role is "
          "left describing KVM's root page.  init_kvm_tdp_mmu and shadow_mmu_init_context "
          "return early only if both roles are unchanged.",
          ("cpu_role", "kvm_calc_cpu_role", "mmu_role"), "split"),
    Patch(8, "60f3cb60a59d", "KVM: x86/mmu: do not recompute root level from "
          "kvm_mmu_role_regs", _P, "nfc",
          "root_level is taken from cpu_role.base.level; role_regs_to_root_level is "
          "inlined into kvm_calc_cpu_role, its last user.",
          ("root_level", "role_regs_to_root_level"), "root_level"),
    Patch(9, "ec283cb1dcb9", "KVM: x86/mmu: remove ept_ad field", _P, "nfc",
          "The nested-EPT walker's PT_HAVE_ACCESSED_DIRTY reads !cpu_role.base.ad_disabled "
          "instead of the ept_ad side field, which goes away.",
          ("ept_ad", "PT_HAVE_ACCESSED_DIRTY", "ad_disabled"), "ept_ad"),
    Patch(10, "19b5dcc3be2e", "KVM: x86/mmu: remove kvm_calc_shadow_root_page_role_common",
          _P, "refactor",
          "kvm_calc_shadow_root_page_role_common equals kvm_calc_cpu_role except for the "
          "level, which the shadow and shadow-NPT builders overwrite anyway; they now start "
          "from the CPU role (direct is already right, and VMRUN requires CR0.PG=1).",
          ("kvm_calc_shadow_root_page_role_common", "kvm_calc_cpu_role")),
    Patch(11, "2ba676774dfc", "KVM: x86/mmu: cleanup computation of MMU roles for "
          "two-dimensional paging", _P, "deliberate",
          "The TDP root role is built from scratch: no extended bits (the walker uses the "
          "CPU role) and cr0_wp = efer_nx = 1 unconditionally, \"matching the format of "
          "shadow pages rather than the format of guest pages\"; only SMM and guest mode "
          "still come from the CPU role.  From here on a guest CR0.WP or EFER.NX toggle "
          "no longer changes the TDP root role -- the precondition for not unloading roots "
          "on such toggles (done for CR0.WP in 6.4).",
          ("kvm_calc_tdp_mmu_root_page_role", "root_role.cr0_wp", "root_role.efer_nx"),
          "tdp_role", ("[LINUS-0527]", "[RR-v1-14]")),
    Patch(12, "f417e1459a12", "KVM: x86/mmu: cleanup computation of MMU roles for shadow "
          "paging", _P, "refactor",
          "The shadow and shadow-NPT root-role builders take the already computed CPU role "
          "instead of recomputing it from the registers.",
          ("kvm_calc_shadow_mmu_root_page_role", "kvm_calc_shadow_npt_root_page_role")),
    Patch(13, "362505deb8e2", "KVM: x86/mmu: store shadow EFER.NX in the MMU role", _P,
          "deliberate",
          "The shadow-paging root role gets efer_nx = 1: KVM runs shadowed guests with "
          "hardware EFER.NX=1 (huge SPTEs under the iTLB-multihit mitigation, and the "
          "CR0.WP=0/CR4.SMEP=1/EFER.NX=0 permission trick); the shadow reserved-bit masks "
          "read root_role.efer_nx instead of computing \"guest NX or TDP off\" (facts §7.5).",
          ("kvm_calc_shadow_mmu_root_page_role", "root_role.efer_nx",
           "reset_shadow_zero_bits_mask"), "shadow_nx"),
    Patch(14, "7a458f0e1ba1", "KVM: x86/mmu: remove extended bits from mmu_role, rename "
          "field", _P, "nfc",
          "The root's role needs no extended bits (they only govern walking guest tables, "
          "which uses the CPU role), so the field becomes a 32-bit union kvm_mmu_page_role "
          "and, since every use is touched anyway, is renamed mmu_role -> root_role.  "
          "kvm_mmu_after_set_cpuid zeroes root_role.word (a zero root role is impossible: "
          "level is never 0) instead of clearing ext.valid.  (Later changed: since 6.9 it "
          "sets root_role.invalid = 1 instead, because a zeroed word made "
          "kvm_mmu_free_roots take direct=0 for a TDP MMU root; docs/eras.md.)",
          ("mmu_role", "root_role", "kvm_mmu_after_set_cpuid"), "ext_bits",
          ("[LINUS-0527]", "[RR-v2-15]")),
    Patch(15, "7a7ae8292391", "KVM: x86/mmu: rename kvm_mmu_role union", _P, "refactor",
          "union kvm_mmu_role, now only the type of cpu_role, becomes union kvm_cpu_role "
          "-- the outcome of the naming debate (see NAMING_DEBATE).",
          ("union kvm_mmu_role", "union kvm_cpu_role"), None,
          ("[LINUS-0527]", "[RR-v2-16-SC]")),
    Patch(16, "faf729621c96", "KVM: x86/mmu: remove redundant bits from extended role", _P,
          "nfc",
          "ext.cr0_pg and ext.cr4_pae go: every MMU now has a CPU role whose base already "
          "says it (paging on <=> base.level > 0; PAE <=> !base.has_4_byte_gpte).  The "
          "remaining extended bits move down two places.",
          ("ext.cr0_pg", "ext.cr4_pae", "union kvm_mmu_extended_role"), "ext_layout"),
    Patch(17, "56b321f9e332", "KVM: x86/mmu: simplify and/or inline computation of shadow "
          "MMU roles", _P, "refactor",
          "Shadow root roles are the CPU role's base with another level (max(level, 3) for "
          "shadow paging, the TDP level for shadow NPT): one line each, inlined into "
          "kvm_init_shadow_mmu and kvm_init_shadow_npt_mmu.",
          ("kvm_init_shadow_mmu", "kvm_init_shadow_npt_mmu")),
    Patch(18, "a7f1de9b6066", "KVM: x86/mmu: pull CPU mode computation to kvm_init_mmu", _P,
          "refactor",
          "kvm_init_mmu computes the CPU role once and hands it to the nested, TDP or "
          "shadow init function.",
          ("kvm_init_mmu", "kvm_calc_cpu_role")),
    Patch(19, "a972e29c1d6c", "KVM: x86/mmu: replace shadow_root_level with "
          "root_role.level", _P, "nfc",
          "The shadow_root_level side field is replaced by root_role.level.",
          ("shadow_root_level", "root_role.level"), "shadow_root_level"),
    Patch(20, "4d25502aa12e", "KVM: x86/mmu: replace root_level with cpu_role.base.level",
          _P, "nfc",
          "The root_level side field (the guest's paging level) is replaced by "
          "cpu_role.base.level.",
          ("root_level", "cpu_role.base.level"), "root_level"),
    Patch(21, "347a0d0ded16", "KVM: x86/mmu: replace direct_map with root_role.direct", _P,
          "nfc",
          "The direct_map side field is replaced by root_role.direct; struct kvm_mmu has no "
          "side copies of role information left.",
          ("direct_map", "root_role.direct"), "direct_map"),
)

#: Merged right after the series (same pull, [LINUS-0527]); Lai Jiangshan's.
FOLLOW_UPS: tuple[Patch, ...] = (
    Patch(22, "767d8d8d503f", "KVM: X86/MMU: Add sp_has_gptes()", "Lai Jiangshan",
          "refactor",
          "A helper saying whether a shadow page shadows guest PTEs (not direct, and -- "
          "with the next patch -- not passthrough); write-tracking and unsync use it.",
          ("sp_has_gptes",)),
    Patch(23, "84e5ffd045f3", "KVM: X86/MMU: Fix shadowing 5-level NPT for 4-level NPT L1 "
          "guest", "Lai Jiangshan", "fix",
          "Adds role.passthrough (page-role bit 18): a nested-NPT root of level 5 over L1's "
          "4-level NPT has no guest PTEs of its own; child pages clear the bit.",
          ("role.passthrough", "kvm_init_shadow_npt_mmu"), "passthrough"),
)

#: The postings, with the fact sheet's tags.
POSTINGS: tuple[tuple[str, str, str, str], ...] = (
    ("v1", "2022-02-04", "23 patches, \"KVM: MMU: MMU role refactoring\"", "[RR-v1-0]"),
    ("v2", "2022-02-21", "25 patches; \"KVM: x86/mmu:\" prefix; cpu_mode, kvm_mmu_paging_mode",
     "[RR-v2-15]"),
    ("queue", "2022-04-02", "pushed to kvm.git queue", "[QUEUE]"),
    ("v3", "2022-04-14", "22 patches (21 Paolo + 1 Sean), cpu_role / kvm_cpu_role names",
     "[RR-v3-0]"),
    ("merged", "2022-05-27", "21 patches in Linus's master (5.19 merge window)",
     "[LINUS-0527]"),
)


def patch(key: str) -> Patch:
    """A patch of :data:`PATCHES` or :data:`FOLLOW_UPS` by hash prefix (>= 7 digits) or
    by its 1-based order."""
    if isinstance(key, bool) or not isinstance(key, (str, int)):
        raise TypeError(f"patch key must be a hash prefix (str) or an order (int), "
                        f"not {type(key).__name__}")
    every = PATCHES + FOLLOW_UPS
    if isinstance(key, int):
        for p in every:
            if p.order == key:
                return p
        raise ValueError(f"patch order {key} is out of range: allowed 1..{len(every)}")
    if len(key) < 7:
        raise ValueError(f"hash prefix {key!r} is too short: allowed 7 to 12 hex digits")
    found = [p for p in every if p.hash.startswith(key.lower())]
    if len(found) != 1:
        raise ValueError(f"hash prefix {key!r} matches {len(found)} patches: allowed one of "
                         f"{[p.hash for p in every]}")
    return found[0]


# ---- the naming debate (facts §8) ------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Message:
    """One message of the naming discussion, cited as the fact sheet cites it."""

    date: str
    author: str
    tag: str
    message_id: str
    position: str             # what the author proposed or objected to, in our words


NAMING_DEBATE: tuple[Message, ...] = (
    Message("2022-02-04", "Paolo Bonzini", "[RR-v1-0]",
            "<20220204115718.14934-1-pbonzini@redhat.com>",
            "v1 cover letter: the MMU role \"is a mess\" mixing CPU set-up and shadow page "
            "format; the series separates the shadow page table format (\"MMU role\") from "
            "the guest page table format (\"CPU role\")."),
    Message("2022-02-07", "David Matlack", "[RR-name-DM]", "<YgGmgMMR0dBmjW86@google.com>",
            "Proposes guest_role instead of cpu_role, citing the precedent of guest_walker; "
            "finds it more intuitive."),
    Message("2022-02-07", "Sean Christopherson", "[RR-name-SC1]",
            "<YgGq31edopd6RMts@google.com>",
            "Prefers not guest_role: too close to is_guest_mode() and the role's own "
            "guest_mode bit; suggests vcpu_role if cpu_role is unintuitive."),
    Message("2022-02-07", "David Matlack", "[RR-name-DM2]",
            "<CALzav=d05sMd=ARkV+GMf9SkxKcg9c9n5ttb274M2fZrP27PDA@mail.gmail.com>",
            "Counters that guest_role.guest_mode could simply carry a comment."),
    Message("2022-02-09", "Sean Christopherson", "[RR-prefix]",
            "<YgRApq20ds4FDivX@google.com>",
            "Side thread: asks for the \"KVM: x86/mmu:\" subject prefix instead of "
            "\"KVM: MMU:\" (Paolo agreed on 2022-02-10; v2 and v3 use it)."),
    Message("2022-02-10", "Sean Christopherson", "[RR-name-SC2]",
            "<YgRmXDn7b8GQ+VzX@google.com>",
            "\"guest\" already means L2 (guest_mmu...): vcpu->arch.guest_mmu.guest_role would "
            "confuse; dislikes union kvm_mmu_role cpu_role beside union kvm_mmu_page_role "
            "mmu_role; suggests kvm_mmu_vcpu_role vcpu_role / mmu_role, and complains about "
            "the context/g_context variable names."),
    Message("2022-02-10", "Paolo Bonzini", "[RR-name-PB]",
            "<40930834-8f54-4701-d3ec-f8287bc1333f@redhat.com>",
            "Proposes union kvm_mmu_page_role root_role and union kvm_mmu_paging_mode "
            "cpu_mode; v2 (2022-02-21) uses cpu_mode / kvm_mmu_paging_mode."),
    Message("2022-03-08", "Sean Christopherson", "[RR-v2-16-SC]",
            "<YierXBEvTdp5aw+u@google.com>",
            "\"Official vote\": union kvm_mmu_cpu_role cpu_role with kvm_calc_cpu_role, "
            "because paging_mode/cpu_mode mixed \"role\", \"mode\" and \"paging\" "
            "inconsistently.  v3 and mainline: cpu_role of type union kvm_cpu_role."),
)


@dataclasses.dataclass(frozen=True)
class NameCandidate:
    """A name proposed for the CPU-side role, and what became of it."""

    name: str
    proposed_by: str
    date: str
    tag: str
    outcome: str


NAME_CANDIDATES: tuple[NameCandidate, ...] = (
    NameCandidate("cpu_role (union kvm_mmu_role)", "Paolo Bonzini", "2022-02-04", "[RR-v1-0]",
                  "v1 name; kept as the field name in the end"),
    NameCandidate("guest_role", "David Matlack", "2022-02-07", "[RR-name-DM]",
                  "rejected: \"guest\" means L2 in KVM (Sean, [RR-name-SC1], [RR-name-SC2])"),
    NameCandidate("vcpu_role (union kvm_mmu_vcpu_role)", "Sean Christopherson", "2022-02-07",
                  "[RR-name-SC1]", "not adopted"),
    NameCandidate("cpu_mode (union kvm_mmu_paging_mode)", "Paolo Bonzini", "2022-02-10",
                  "[RR-name-PB]", "used in v2 (2022-02-21); dropped after Sean's vote"),
    NameCandidate("cpu_role (union kvm_mmu_cpu_role)", "Sean Christopherson", "2022-03-08",
                  "[RR-v2-16-SC]", "adopted in v3 as union kvm_cpu_role cpu_role, built by "
                  "kvm_calc_cpu_role"),
    NameCandidate("root_role (union kvm_mmu_page_role)", "Paolo Bonzini", "2022-02-10",
                  "[RR-name-PB]", "adopted: the rename mmu_role -> root_role is in "
                  "7a458f0e1ba1"),
)


@dataclasses.dataclass(frozen=True)
class NameChange:
    """An old name of 5.18 and what replaced it in 5.19."""

    old: str
    new: str
    commit: str
    note: str


NAME_CHANGES: tuple[NameChange, ...] = (
    NameChange("union kvm_mmu_role mmu_role", "union kvm_mmu_page_role root_role",
               "7a458f0e1ba1", "the root page's role only; 32 bits, no extended part"),
    NameChange("(none: CPU state lived in mmu_role)", "union kvm_cpu_role cpu_role",
               "e5ed0fb01004, 7a7ae8292391", "the guest's paging; field added by the split, "
               "type renamed from kvm_mmu_role"),
    NameChange("kvm_calc_mmu_role_common, kvm_calc_shadow_root_page_role_common",
               "kvm_calc_cpu_role", "e5ed0fb01004, 19b5dcc3be2e, 2ba676774dfc",
               "one builder for the CPU role"),
    NameChange("root_level", "cpu_role.base.level", "4d25502aa12e", "guest paging level"),
    NameChange("shadow_root_level", "root_role.level", "a972e29c1d6c", "KVM's root level"),
    NameChange("direct_map", "root_role.direct", "347a0d0ded16", "roots map GPAs directly"),
    NameChange("ept_ad", "!cpu_role.base.ad_disabled", "ec283cb1dcb9",
               "nested EPT walker sets A/D bits"),
    NameChange("ext.cr0_pg", "cpu_role.base.level > 0", "faf729621c96", "paging on"),
    NameChange("ext.cr4_pae", "!cpu_role.base.has_4_byte_gpte", "faf729621c96",
               "PAE-format (8-byte) gptes"),
    NameChange("\"KVM: MMU:\" subject prefix", "\"KVM: x86/mmu:\"", "v2 onwards",
               "[RR-prefix]"),
)
