"""KVM's MMU, module by module as arch/x86/kvm/ splits it.

* ``roles``       -- kvm_mmu_page_role, kvm_cpu_role and their builders (mmu.c, 5.19+);
* ``legacy``      -- the single mmu_role of 5.18 and before;
* ``permissions`` -- update_permission_bitmask, update_pkru_bitmask, permission_fault (mmu.c, mmu.h);
* ``shadow``      -- shadow pages keyed by (gfn, role) (mmu.c, paging_tmpl.h);
* ``tdp``         -- two-dimensional paging roots and the 2D walk (tdp_mmu.c);
* ``root_cache``  -- prev_roots and the fast PGD switch (mmu.c);
* ``eras``        -- which kernel behaviour applies in which release;
* the vCPU, one part per kernel file, composed by ``vcpu``:

  * ``cr``          -- register writes and their checks (x86.c: kvm_set_cr0, kvm_post_set_cr0,
    kvm_set_cr4, kvm_post_set_cr4, set_efer, kvm_set_cr3);
  * ``mmu_context`` -- the MMU context and roots (mmu.c: kvm_init_mmu and its early return,
    kvm_mmu_reset_context, kvm_mmu_load/unload/reload, kvm_mmu_new_pgd, the 6.4
    passthrough refresh);
  * ``vendor``      -- the vendor interface (struct kvm_x86_ops): which writes exit, SMM hooks,
    nested TDP; ``vmx`` (vmx/vmx.c) and ``svm`` (svm/svm.c) implement it;
  * ``smm``         -- enter_smm, emulator_leave_smm, kvm_smm_changed (smm.c);
  * ``nested``      -- nested entry/exit, guest_mmu, nested_mmu (vmx/nested.c, svm/nested.c);
  * ``trace``       -- the vCPU's events and counters (trace.h, kvm_vcpu_stat);
  * ``vcpu``        -- ``Vm`` (struct kvm_arch) and ``VCpu``, the composition of the parts.
"""
