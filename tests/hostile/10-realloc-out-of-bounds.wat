;; attack: a `cabi_realloc` that hands the host a pointer far beyond linear
;;         memory, so the host would write the task's strings outside it.
;; expect: trap `realloc return: beyond end of memory`; nothing is written.
(module
  (memory (export "memory") 1)
  (global $bump (mut i32) (i32.const 1024))
  ;; Every allocation "succeeds" at 0xFFFF0000, beyond the one page.
  (func $realloc (export "cabi_realloc") (param i32 i32 i32 i32) (result i32)
    (i32.const 0xFFFF0000))
  ;; ok({output: string(ptr, len), notes: none}) in the return area at 0.
  (func $answer (param $ptr i32) (param $len i32) (result i32)
    (i32.store8 (i32.const 0) (i32.const 0))
    (i32.store (i32.const 4) (local.get $ptr))
    (i32.store (i32.const 8) (local.get $len))
    (i32.store8 (i32.const 12) (i32.const 0))
    (i32.const 0))
  ;; solve(task) — locals 6 and 7 are the task input's pointer and length.
  (func (export "vivarium:agent/task-agent@0.1.0#solve")
    (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)
    (call $answer (local.get 6) (local.get 7)))
  (func (export "vivarium:agent/meta-agent@0.1.0#improve")
    (param i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)
    unreachable)
)
