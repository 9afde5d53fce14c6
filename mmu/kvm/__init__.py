"""KVM's MMU, module by module as arch/x86/kvm/ splits it.

* ``roles``       -- kvm_mmu_page_role, kvm_cpu_role and their builders (mmu.c, 5.19+);
* ``legacy``      -- the single mmu_role of 5.18 and before;
* ``permissions`` -- update_permission_bitmask, update_pkru_bitmask, permission_fault (mmu.c, mmu.h);
* ``shadow``      -- shadow pages keyed by (gfn, role) (mmu.c, paging_tmpl.h);
* ``tdp``         -- two-dimensional paging roots and the 2D walk (tdp_mmu.c);
* ``root_cache``  -- prev_roots and the fast PGD switch (mmu.c);
* ``eras``        -- which kernel behaviour applies in which release;
* ``vcpu``        -- the vCPU: register writes (x86.c), the MMU context (mmu.c), the vendors
  (vmx.c, svm.c), SMM (smm.c) and nesting (nested.c).
"""
