;; A core module for the cluster's tests and bench: `solve` counts to SPIN
;; (as unsigned 32-bit) and answers the one byte ANSWER; `improve` traps.
;; Componentized with `vivarium::componentize::from_core_module`.
(module
  (memory (export "memory") 1)
  (global $bump (mut i32) (i32.const 1024))
  (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $bump))
    (global.set $bump (i32.add (global.get $bump) (i32.add (local.get 3) (i32.const 8))))
    (local.get $p))
  (data (i32.const 64) "ANSWER")
  (func (export "vivarium:agent/task-agent@0.1.0#solve")
    (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)
    (local $i i32)
    (loop $l
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $l (i32.lt_u (local.get $i) (i32.const SPIN))))
    (i32.store8 (i32.const 0) (i32.const 0))
    (i32.store (i32.const 4) (i32.const 64))
    (i32.store (i32.const 8) (i32.const 1))
    (i32.store8 (i32.const 12) (i32.const 0))
    (i32.const 0))
  (func (export "vivarium:agent/meta-agent@0.1.0#improve")
    (param i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32) unreachable))
