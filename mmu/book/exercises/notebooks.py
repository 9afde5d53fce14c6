"""Write the lab notebooks ``exercises/*.ipynb`` (the solution versions) from one spec.

``python -m mmu.book.exercises.notebooks exercises/`` regenerates them; the student copies
come from :mod:`mmu.book.exercises.student`.  Each exercise cell prints a seeded problem; the
next cell holds the teacher's solution between ``# BEGIN SOLUTION`` / ``# END SOLUTION``
(generated from the problem's worked steps, so a solution can never disagree with the
model without the lab's own test failing) and ends with ``problem.grade(answer)``.

The generator also writes what the student tool and the grader read: the notebook's
``metadata.mmu.lab`` (which lab this is, whatever the file is called later) and, on the
two cells of exercise *n*, ``metadata.mmu = {"exercise": n, "cell": "problem" | "check"}``.
"""
from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from mmu.book.exercises.base import Problem, registry
from mmu.book.exercises.seeds import exercise_seeds, find_seed
from mmu.book.exercises.student import BEGIN, END

__all__ = ["LABS", "GRADE_LINE", "build_lab", "build_all", "find_seed", "problem_source",
           "lab_of", "exercise_of"]

#: The last line of every check cell.
GRADE_LINE = "problem.grade(answer)"

_HOW = ("Each exercise prints a problem made from a seed.  In the lab's own copy everyone "
        "in the room gets the same seeds; if your teacher made your copy from the class "
        "roster, your seeds are your own, derived from your student id and the lab "
        "(exercises/README.md says how).  Work the problem out on paper, write your answer "
        "in the cell below it (replace the `...`), and run the cell: "
        "`problem.grade(answer)` says ✔ pass, or names the **first step** that is wrong "
        "and the rule for it; either way the notebook runs on to the next exercise.  "
        "`problem.template()` shows the shape of an answer.  Leave the seed and the last "
        "line of each answer cell as they are: the grader re-creates your problems "
        "and checks the `answer` you leave.  Want more practice?  "
        "`make_problem(seed, difficulty)` with another seed gives a fresh problem of the "
        "same kind.")


def problem_source(seed: int, difficulty: int) -> str:
    """The source of an exercise's problem cell."""
    return f"problem = make_problem(seed={seed}, difficulty={difficulty})\nprint(problem)"


def lab_of(nb) -> str | None:
    """The lab a notebook was generated for (``metadata.mmu.lab``), or None."""
    meta = nb.get("metadata", {}).get("mmu", {})
    lab = meta.get("lab") if isinstance(meta, dict) else None
    return lab if isinstance(lab, str) and lab in LABS else None


def exercise_of(cell) -> tuple[int, str] | None:
    """``(n, "problem" | "check")`` for a cell the generator marked, else None."""
    meta = cell.get("metadata", {}).get("mmu", {})
    if not isinstance(meta, dict):
        return None
    n, part = meta.get("exercise"), meta.get("cell")
    if type(n) is int and n >= 1 and part in ("problem", "check"):
        return n, part
    return None


#: Per lab: (title, what-you-will-see bullets, intro, exercises, extra cells).  Each exercise
#: is (heading, explanation, difficulty, seed or a predicate for find_seed).
LABS: dict[str, dict] = {
    "walks": dict(
        title="# Lab 1: Page walks by hand",
        see=["translate a linear address through 4-level, 5-level, 32-bit and PAE tables, "
             "one entry at a time;",
             "find where a large page (2 MiB, 4 MiB, 1 GiB) ends the walk early;",
             "tell a not-present fault's level and error code from the tables alone."],
        intro=("The CPU -- and KVM's software walker `FNAME(walk_addr_generic)`, which reads "
               "a guest's tables when it shadows them -- turns a linear address into a "
               "physical one by reading one page-table entry (PTE) per level.  A guest "
               "virtual address (GVA) is split into an index per level plus a page offset."),
        exercises=[
            ("A 4-level walk to a 4 KiB page",
             "Four levels of 9-bit indexes (PML4E, PDPTE, PDE, PTE), 8-byte entries.  The "
             "table address is bits 51:12 of the entry above (CR3 for the first table).", 1, 1),
            ("A large page",
             "An entry with the page-size bit (PS, bit 7) set in a PDPTE or PDE is the leaf: "
             "the walk stops there and the page offset gets wider.", 2, 2),
            ("32-bit and PAE paging, and walks that fail",
             "32-bit paging has 4-byte entries and 10-bit indexes; physical address "
             "extension (PAE) paging starts with a 4-entry table indexed by GVA bits 31:30.  "
             "A walk that meets an entry with P=0 stops with a page fault (#PF).", 3,
             lambda p: p.steps()[-1].name == "error code"),
            ("One more of each kind", "Same rules, different seed.", 3, 11),
        ]),
    "permissions": dict(
        title="# Lab 2: Predict the page-fault error code",
        see=["decide whether an access is allowed from the entries' R/W, U/S and XD bits and "
             "the control registers;",
             "name the rule that refuses it (U/S, R/W, XD, SMEP, SMAP, protection keys);",
             "build the page-fault (#PF) error code bit by bit, including when the I/D bit is "
             "reported."],
        intro=("After a walk finds the page, the access rights decide.  KVM precomputes "
               "them per CPU role in `update_permission_bitmask` and `update_pkru_bitmask` "
               "and checks them in `permission_fault`; the rules are the Intel SDM's "
               "(Vol. 3A 4.6).  Supervisor-mode execution prevention (SMEP) and "
               "supervisor-mode access prevention (SMAP) protect the kernel from user pages; "
               "protection keys (PKU) add per-key rights from the PKRU register."),
        exercises=[
            ("User/supervisor and read/write", "CR0.WP=1 here: the kernel obeys R/W too.", 1,
             lambda p: p.solve()["rule"] != "none"),
            ("Execute-disable and CR0.WP=0",
             "A fetch from a page with XD=1 faults when EFER.NXE=1; with CR0.WP=0 the kernel "
             "may write to read-only pages.", 2, lambda p: p.solve()["rule"] == "XD"),
            ("SMEP, SMAP, protection keys, rights taken away higher up",
             "Rights are the AND over all levels: a U/S=0 or R/W=0 anywhere applies.", 3,
             lambda p: p.solve()["rule"] == "SMAP"),
            ("Protection keys", "PKRU has two bits per key: AD (bit 2k) and WD (bit 2k+1).",
             3, lambda p: p.solve()["rule"] == "PK"),
        ]),
    "roles": dict(
        title="# Lab 3: Role words",
        see=["compute `cpu_role.base.word` from CR0, CR4 and EFER, bit by bit;",
             "compute the root role of two-dimensional paging (TDP) and of shadow paging;",
             "say which role fields a register write changes -- and which it cannot."],
        intro=("Since Linux 5.19 every KVM MMU keeps two roles: `cpu_role`, how the guest's "
               "page tables look (`kvm_calc_cpu_role`), and `root_role`, how KVM's own root "
               "page looks.  Both pack into integers (`union kvm_mmu_page_role`: level in "
               "bits 0-3, has_4_byte_gpte bit 4, quadrant 5-6, direct 7, access 8-10, "
               "invalid 11, efer_nx 12, cr0_wp 13, smep_andnot_wp 14, smap_andnot_wp 15, "
               "ad_disabled 16, guest_mode 17, passthrough 18, smm 24-31).  With TDP -- "
               "extended page tables (EPT) or nested page tables (NPT) -- the root role "
               "barely depends on the guest; with shadow paging it is the CPU role's base."),
        exercises=[
            ("The CPU role's base word", "Answer with one integer; the check unpacks it "
             "field by field.", 1, 3),
            ("Root roles: TDP and shadow", "", 2, lambda p: p.mmu == "shadow"),
            ("Root roles, the other kind", "", 2, lambda p: p.mmu == "tdp"),
            ("Which role bits change?", "Answer with two sets of field names.", 3,
             lambda p: p.mmu == "shadow" and len(p.solve()["cpu_role"]) >= 2),
        ]),
    "shadow": dict(
        title="# Lab 4: Shadow paging, one fault at a time",
        see=["list the shadow pages a guest page fault builds, level by level, and which "
             "guest table each one shadows;",
             "see why guest huge pages become *direct* shadow pages;",
             "follow a 32-bit guest's tables into 64-bit shadow pages with quadrants."],
        intro=("Without EPT/NPT, KVM builds the page tables the hardware walks (GVA to host "
               "physical address, HPA) itself: each shadow page mirrors one guest table and "
               "is found again by (guest frame number (gfn), role) in a per-VM hash "
               "(`kvm_mmu_get_shadow_page`).  On a guest fault `FNAME(fetch)` builds the path "
               "from the root down."),
        exercises=[
            ("A 4-level guest, 4 KiB page", "", 1, 5),
            ("A guest huge page", "", 2, 2),
            ("A 32-bit guest", "Shadow pages always have 512 8-byte entries; a 32-bit "
             "guest table has 1024 4-byte ones.", 3, 6),
        ]),
    "root_reuse": dict(
        title="# Lab 5: Is the root reused?",
        see=["predict hits and misses of the root cache (current root + 3 `prev_roots`);",
             "see shadow pages outlive the cache in the per-VM hash;",
             "compare what CR0.WP and CR4.SMEP toggles cost under two-dimensional paging (TDP) "
             "and shadow paging, on "
             "Linux 5.19 and 6.4."],
        intro=("Building a root is expensive under shadow paging, so on every guest CR3 load "
               "`kvm_mmu_new_pgd` first tries `fast_pgd_switch` over a small cache; a role "
               "change runs `kvm_mmu_reset_context`, which unloads every root."),
        exercises=[
            ("Switching among a few address spaces", "", 1, 4),
            ("More address spaces than the cache holds", "", 2,
             lambda p: "found" in p.solve().values()),
            ("Role changes, TDP and shadow, 5.19 and 6.4", "", 3,
             lambda p: p.kernel == "5.19" and p.mmu == "tdp" and "new" in p.solve().values()),
            ("The same, on the other MMU", "", 3,
             lambda p: p.mmu == "shadow" and "found" in p.solve().values()),
        ]),
    "cr0_wp": dict(
        title="# Lab 6: The CR0.WP story",
        see=["see why `cr0_wp` is in the shadow root role but constant in the two-dimensional "
             "paging (TDP) root role;",
             "say what a guest's CR0.WP toggle costs on Linux 5.18 to 6.4;",
             "find the bug in a broken root-role computation and watch the hole it opens."],
        intro=("Hardened guest kernels (grsecurity) flip CR0.WP around every write to "
               "read-only kernel data.  With CR0.WP=0, shadow paging lets a kernel write to a "
               "read-only page by making the shadow PTE writable but not user (the CR0.WP=0 "
               "trick, `FNAME(page_fault)`), so shadow pages made with WP=0 must never be "
               "used with WP=1 -- which is why the bit is in the shadow root role.  With "
               "two-dimensional paging (TDP) "
               "the bit only matters to the guest's walker, and Linux 6.4 stopped unloading "
               "roots for it."),
        exercises=[
            ("What changes when only CR0.WP flips", "", 1,
             lambda p: p.mmu == "shadow" and len(p.solve()["cpu_role"]) >= 2),
            ("What a toggle costs", "", 2,
             lambda p: p.kernel == "5.19" and p.mmu == "tdp"),
            ("What it costs on 6.4", "", 2,
             lambda p: p.kernel == "6.4" and p.mmu == "tdp" and p.vendor == "intel"),
            ("Find the bug", "", 3, lambda p: p.field == "cr0_wp"),
            ("Find another bug", "", 3, lambda p: p.field == "smep_andnot_wp"),
        ],
        extra=[
            new_markdown_cell(
                "## The hole a root role without cr0_wp opens\n\n"
                "`wp_hole(root_role_fn)` replays the story on the shadow MMU model: the guest "
                "kernel writes to a read-only page with CR0.WP=0 (KVM applies the trick), "
                "sets CR0.WP=1, and writes again.  The architecture requires a #PF now.  "
                "Look for the line *root-level shadow page reused*."),
            new_code_cell("from mmu.book.exercises.cr0_wp import BUGGY_ROOT_ROLES, wp_hole\n"
                          "from mmu.kvm.roles import shadow_root_role\n"
                          "print(wp_hole(shadow_root_role))\n"
                          "print(wp_hole(BUGGY_ROOT_ROLES['cr0_wp']))"),
            new_markdown_cell(
                "With the kernel's root role the WP=1 root has a different word, so none of "
                "the WP=0 shadow pages is reused and the write faults.  Without `cr0_wp` the "
                "words are equal, the old root page is found in the hash, and its writable "
                "shadow PTE lets the guest kernel write to read-only memory.  The next cell "
                "asserts exactly that."),
            new_code_cell("assert not wp_hole(shadow_root_role).hole\n"
                          "hole = wp_hole(BUGGY_ROOT_ROLES['cr0_wp'])\n"
                          "assert hole.hole and hole.root_reused and hole.architectural_fault"),
        ]),
    "legacy": dict(
        title="# Lab 7: The 5.18 -> 5.19 role split",
        see=["compute the single `mmu_role` of Linux 5.18 and the `root_role` of 5.19 for "
             "the same state, and say where they differ;",
             "say whether a guest CR0.WP or EFER.NX toggle changes the root page's role on "
             "5.18 and on 5.19, under two-dimensional paging (TDP) and shadow paging;",
             "pack the pre-series extended role word, with its `cr0_pg` and `cr4_pae`."],
        intro=("Until Linux 5.18 a `struct kvm_mmu` had one role, `mmu_role`: its `base` was "
               "the role of KVM's root page *and* carried the guest's CR0.WP and EFER.NX "
               "(`kvm_calc_mmu_role_common`), even under TDP, where the root page does not "
               "depend on them.  Linux 5.19 split it into `cpu_role` (the guest's paging, "
               "`kvm_calc_cpu_role`) and `root_role` (KVM's page: for TDP `cr0_wp` and "
               "`efer_nx` are constant 1; for shadow paging `efer_nx` is forced to 1), and "
               "dropped `ext.cr0_pg` and `ext.cr4_pae`, which `base.direct` and "
               "`base.has_4_byte_gpte` already said.  In 5.18 bit 18 of the page role is "
               "unused (`passthrough` came with 5.19)."),
        exercises=[
            ("One state, two kernels", "Answer with two words and a set of field names.", 1,
             lambda p: p.mmu == "tdp" and len(p.solve()["differ"]) >= 2),
            ("The same under shadow paging", "", 1,
             lambda p: p.mmu == "shadow" and p.solve()["differ"]),
            ("Does a toggle change the root role?", "", 2,
             lambda p: p.mmu == "tdp" and p.solve()["5.18"]),
            ("The toggle under shadow paging", "", 2,
             lambda p: p.mmu == "shadow" and p.solve()["5.18"] != p.solve()["5.19"]),
            ("The pre-series extended word", "Answer with one word.", 3, 2),
        ]),
    "nested": dict(
        title="# Lab 8: Nested roles",
        see=["compute the role of the MMU that shadows L1's extended page tables (EPT);",
             "compute the CPU and root roles of nested NPT, including the `passthrough` "
             "root KVM puts over a 4-level L1 table when its own is 5-level;",
             "say which roots `guest_mode` and `smm` keep apart."],
        intro=("When L1 runs an L2 guest with EPT or NPT, KVM shadows L1's EPT/NPT tables in "
               "a second MMU, `guest_mmu`.  For EPT its role is built from zero "
               "(`kvm_calc_shadow_ept_root_page_role`): only the EPTP's walk length and A/D "
               "enable and the host's execute-only support enter it.  For NPT it is the CPU "
               "role of L1's registers as `nested_svm_init_mmu_context` passes them (CR0 = PG "
               "only, CR4.PKE masked; `kvm_init_shadow_npt_mmu`), with KVM's level.  Every "
               "role word also has `guest_mode` (bit 17) and `smm` (bits 24-31), so roots "
               "made for L2 or for SMM are never found for L1 outside SMM."),
        exercises=[
            ("The nested EPT role", "Answer with two words: base and ext.", 1,
             lambda p: not p.ad and p.execonly),
            ("Nested NPT with a passthrough root", "", 2,
             lambda p: p.root.passthrough and not p.smm),
            ("Nested NPT, L1 in legacy paging", "", 2,
             lambda p: p.cpu.base.level in (2, 3)),
            ("Which roots are shared?", "Answer with a list of ints.", 3,
             lambda p: p.mmu == "tdp" and len(set(p.solve().values())) >= 3),
            ("The same under shadow paging", "", 3,
             lambda p: p.mmu == "shadow" and len(set(p.solve().values())) >= 2),
        ]),
}


def _sentence(title: str) -> str:
    """A title as a sentence: a full stop unless it already ends with one (or "?")."""
    return title if title.endswith((".", "?", "!")) else title + "."


def _exercise_cells(kind: str, n: int, heading: str, text: str, difficulty: int,
                    seed: int) -> list:
    problem: Problem = registry()[kind](seed, difficulty)
    cells = [new_markdown_cell(f"## Exercise {n}: {heading}\n\n"
                               + (text + "\n\n" if text else "")
                               + f"Difficulty {difficulty} of 3.  {_sentence(problem.title)}"),
             new_code_cell(problem_source(seed, difficulty)),
             new_code_cell(f"{BEGIN}\n{problem.solution_code('answer')}\n{END}\n{GRADE_LINE}")]
    cells[1].metadata["mmu"] = {"exercise": n, "cell": "problem"}
    cells[2].metadata["mmu"] = {"exercise": n, "cell": "check"}
    return cells


def build_lab(kind: str) -> nbformat.NotebookNode:
    spec = LABS[kind]
    nb = new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)",
                                 "language": "python"}
    nb.metadata["mmu"] = {"lab": kind}
    nb.cells = [
        new_markdown_cell(f"{spec['title']}\n\nWhat you will see:\n\n"
                          + "\n".join(f"* {s}" for s in spec["see"])),
        new_markdown_cell(f"## How this lab works\n\n{spec['intro']}\n\n{_HOW}"),
        new_code_cell(f"from mmu.book.exercises.{kind} import make_problem"),
    ]
    seeds = exercise_seeds(kind)
    for n, ((heading, text, _, _), (seed, difficulty)) in enumerate(
            zip(spec["exercises"], seeds), 1):
        nb.cells += _exercise_cells(kind, n, heading, text, difficulty, seed)
    nb.cells += spec.get("extra", [])
    for i, cell in enumerate(nb.cells):
        # Stable ids (nbformat draws random ones), so regenerating a lab only changes
        # the cells whose text changed.
        cell["id"] = f"{kind}-{i:02d}"
    nbformat.validate(nb)
    return nb


def build_all(dest: str | Path = "exercises") -> list[Path]:
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    out = []
    for kind in LABS:
        path = dest / f"{kind}.ipynb"
        nbformat.write(build_lab(kind), path)
        out.append(path)
    return out


if __name__ == "__main__":
    for p in build_all(*(sys.argv[1:2] or ["exercises"])):
        print(f"wrote {p}")
