"""The x86 architecture, as the Intel SDM defines it: no KVM here.

* ``bits``      -- entry bits, error codes and access kinds (SDM Vol. 3A, 4.5-4.7);
* ``regs``      -- CR0/CR4/EFER/RFLAGS and the paging mode they select (SDM 4.1);
* ``memory``    -- sparse guest-physical memory;
* ``walker``    -- the guest page walk in every paging mode, and the EPT/NPT walks
  (the kernel's counterpart is paging_tmpl.h FNAME(walk_addr_generic));
* ``batch``     -- the same walk vectorised over numpy arrays;
* ``pagetable`` -- builders that map ranges, so nobody hand-assembles entries.
"""
