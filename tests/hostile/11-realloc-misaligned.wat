;; attack: a `cabi_realloc` that ignores the requested alignment (returns an
;;         odd address whenever alignment above 1 is asked), so the host
;;         would write `list<source-file>` of an `improve` context misaligned.
;; expect: trap `realloc return: result not aligned` (on `improve` with one
;;         source file).
(module
  (memory (export "memory") 1)
  (global $bump (mut i32) (i32.const 1024))
  ;; A bump allocator that returns an odd address when alignment > 1 is asked.
  (func $realloc (export "cabi_realloc") (param i32 i32 i32 i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $bump))
    (global.set $bump (i32.add (global.get $bump) (i32.add (local.get 3) (i32.const 8))))
    (if (i32.gt_u (local.get 2) (i32.const 1))
      (then (return (i32.or (local.get $p) (i32.const 1)))))
    (local.get $p))
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
