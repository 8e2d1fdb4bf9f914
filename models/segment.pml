/*
 * The segment range protocol of nebula-id, as a Promela model for spin.
 *
 * One (pool, tag, datacenter): its counter row in the datacenter's PostgreSQL and its
 * floor in etcd (floors/{dc}/{tag}), two independent witnesses of how far ranges went.
 *   - an allocator takes a range with one atomic `UPDATE ... SET max_id = max_id + step
 *     RETURNING max_id`, keyed by the pool's generation; a missing row is re-created at
 *     the etcd floor, never at 1 (only provisioning creates a first row);
 *   - it reads the etcd floor; when the range starts below it, it repairs the row
 *     (max_id = max(max_id, floor)) and allocates again;
 *   - it moves the floor from below the range's start to the range's end (a CAS on
 *     mod_revision) in a txn that also compares the pool's config generation, and hands
 *     the range out only after that; a floor already at or past the range's end means
 *     another allocator handed that range out before the row lost it: the allocator
 *     repairs the row and allocates again.  The floor is the linearization point;
 *   - provisioning creates the row at max(1, floor);
 *   - the operator deletes the pool (a tombstone keeps its generation), drops its data
 *     (the row, by generation, and the floor, fenced on the leader key and the tombstone)
 *     and re-creates it.
 *
 * Faults, nondeterministic: database suffix loss (an async replica promoted, a restore:
 * the row goes back to an older value, or disappears), allocators paused anywhere,
 * operator delete / drop / re-create, a deposed operator leader.
 *
 * Invariant: no two ranges handed out within one life of the pool overlap (a life ends
 * when its data is legitimately dropped).  A range counts as handed out when the floor
 * txn commits (with BUG_ROW_AT_ONE, which has no floor, when the UPDATE returns); a
 * sidecar still serving a range buffered before a drop is outside this model.  Ranges are watched with a monitor that picks
 * one handed-out range nondeterministically and checks every later one against it.
 *
 * Drop-data under live allocators is not a switch here: with the floor txn as the
 * linearization point, an allocation in flight across a drop and re-create is refused
 * or re-allocated (spin verifies this), so that bug needs BUG_ROW_AT_ONE as well.
 *
 * Bounds: STEP=1 (a range is one counter value; overlap is equality), counters up to
 * MAXC, two allocators, one failover, one delete-or-drop and one re-create.
 *
 * Bug switches (spin -DBUG_X):
 *   BUG_STALE_LEADER  the drop is not fenced on the leader key nor keyed by generation
 *   BUG_ROW_AT_ONE    no etcd floor (the row is the only witness) and an allocator
 *                     re-creates a missing row at 1
 *   BUG_FLOOR_MAX     the floor raise succeeds when the stored floor is already at or
 *                     past the range ("raise to at least N"), so two allocators that got
 *                     the same range from a row that lost an update both hand it out
 */

#ifndef BUG_STALE_LEADER
#define BUG_STALE_LEADER 0
#endif
#ifndef BUG_ROW_AT_ONE
#define BUG_ROW_AT_ONE 0
#endif
#ifndef BUG_FLOOR_MAX
#define BUG_FLOOR_MAX 0
#endif
#ifndef MAXC
#define MAXC 4            /* counters stay below this */
#endif
#ifndef ALLOCS
#define ALLOCS 4          /* range allocations in a run */
#endif

/* PostgreSQL */
bool row;                 /* the row exists */
byte row_max;             /* max_id: the end of the last range */
byte row_gen;             /* the pool generation the row belongs to */
byte replica;             /* what an async replica has: an older max_id */
bool replica_row;
bool failed_over;
/* etcd */
bool floor_set;
byte floor;
bool cfg = true;
byte cfg_gen = 1;
bool tomb;
byte tomb_gen;
byte gens = 1;
byte leader = 1;
bool deposed;
/* budgets and ghosts */
byte allocs;
byte ops_delete;
byte ops_create;
byte life;
byte mon;                 /* the watched range's end (0: none) */

/* The database: the replica lags; a failover promotes it. */
active proctype Database() {
end:
  do
  :: atomic { replica != row_max || replica_row != row -> replica = row_max; replica_row = row }
  :: atomic { !failed_over -> failed_over = true; row_max = replica; row = replica_row;
               if :: !row -> row_max = 0; row_gen = 0 :: else -> skip fi }
  :: atomic { !deposed -> deposed = true; leader = 3 - leader }
  od
}

/* The range is handed out (to the sidecar's buffer): the monitor checks it. */
inline hand_out() {
  if
  :: mon == 0 -> if :: mon = got :: skip fi
  :: mon != 0 -> assert(mon != got)   /* no two ranges overlap */
  fi
}

proctype Allocator() {
  byte gen, got, f;
end:
  do
  :: atomic { allocs < ALLOCS && cfg -> allocs++; gen = cfg_gen };
     /* UPDATE ... RETURNING max_id, keyed by generation */
again:
     atomic {
       if
       :: row && row_gen == gen && row_max + 1 < MAXC -> row_max++; got = row_max
#if !BUG_ROW_AT_ONE
       :: !row && floor_set && cfg && cfg_gen == gen ->
          row = true; row_gen = gen; row_max = floor; goto again   /* re-created at the floor */
#endif
#if BUG_ROW_AT_ONE
       :: !row -> row = true; row_gen = gen; row_max = 1; got = 1
#endif
       :: else -> got = 0
       fi };
     if
     :: got == 0 -> gen = 0; goto done
     :: else -> skip
     fi;
#if !BUG_ROW_AT_ONE
     /* the second witness: read the floor, repair the row when it is behind */
     atomic { f = (floor_set -> floor : 0) };
     if
     :: got <= f ->
        atomic { if :: row && row_gen == gen && row_max < f -> row_max = f :: else -> skip fi;
                 got = 0; f = 0 };
        goto again
     :: else -> f = 0
     fi;
     /* move the floor from below the range's start to its end, in a txn that compares
      * the pool's generation; a floor already at or past the range means another
      * allocator handed it out (the row lost it): repair the row and allocate again */
     atomic {
       if
       :: cfg && cfg_gen == gen ->
          if
          :: !floor_set || floor < got -> floor = got; floor_set = true; hand_out()
          :: else ->
#if BUG_FLOOR_MAX
             hand_out()  /* "raised to at least got": the stored value is returned */
#else
             if :: row && row_gen == gen && row_max < floor -> row_max = floor :: else -> skip fi;
             got = 0; goto again
#endif
          fi
       :: else -> got = 0
       fi };
#endif
#if BUG_ROW_AT_ONE
     atomic { hand_out() };
#endif
     got = 0; gen = 0;
done:
     skip
  od
}

proctype Operator(byte me) {
  byte gen;
end:
  do
  :: /* delete, keeping the data */
     atomic { ops_delete == 0 && leader == me && cfg ->
       ops_delete++; tomb = true; tomb_gen = cfg_gen; cfg = false; cfg_gen = 0 }
  :: /* delete and drop the data */
     atomic { ops_delete == 0 && leader == me && cfg ->
       ops_delete++; gen = cfg_gen; tomb = true; tomb_gen = cfg_gen; cfg = false; cfg_gen = 0 };
     /* DELETE ... WHERE pool AND generation, and the floor, fenced on the leader key */
     atomic {
       if
#if BUG_STALE_LEADER
       :: true ->
          row = false; row_max = 0; row_gen = 0;
#else
       :: leader == me && tomb && tomb_gen == gen ->
          if :: row_gen == gen -> row = false; row_max = 0; row_gen = 0 :: else -> skip fi;
#endif
          floor_set = false; floor = 0;
          if
          :: !cfg && tomb && tomb_gen == gen -> life++; mon = 0   /* the pool is gone */
          :: else -> skip
          fi;
          tomb = false; tomb_gen = 0
       :: else -> skip
       fi;
       gen = 0 }
  :: /* (re-)create and provision: the row starts at max(1, floor) */
     atomic { ops_create == 0 && leader == me && !cfg ->
       ops_create++; gens++; cfg = true; cfg_gen = gens; tomb = false; tomb_gen = 0;
       row = true; row_gen = cfg_gen;
       if :: floor_set && floor > row_max -> row_max = floor :: else -> skip fi;
       if :: row_max == 0 -> row_max = 1 :: else -> skip fi }
  od
}

init {
  atomic {
    row = true; row_max = 1; row_gen = 1; replica = 1; replica_row = true;
    floor_set = true; floor = 1;
    run Allocator(); run Allocator();
    run Operator(1); run Operator(2)
  }
}
