/*
 * The Snowflake worker-ID protocol of nebula-id, as a Promela model for spin.
 *
 * What is modelled (sidecar/nebula_id/etcd/worker.py, claims.py, core/snowflake.py):
 *   - holders claim the key workers/{dc}/{worker} with a create-if-absent txn on a lease;
 *   - a new holder reads clock/{dc}/{worker}, waits until its clock passes
 *     max(stored mark, its own last timestamp), persists a mark `horizon` ahead of its
 *     clock (fenced on the claim carrying its lease), then serves;
 *   - each tick sends a keepalive, then a fenced txn that advances the mark; only when
 *     both are answered does the deadline move, to keepalive-sent + TTL - margin;
 *   - an ID is issued only while monotonic time < deadline and its timestamp is
 *     > the previous one, > the floor and <= the persisted mark;
 *   - graceful stop: stop issuing, lower the mark to the last timestamp issued, revoke;
 *   - the operator deletes a pool (the config becomes a tombstone that keeps the pool's
 *     identity: epoch and generation), drops its data (fence first, then wait until every
 *     claim is gone and every lease has lapsed, then delete the marks), and re-creates it
 *     (over a tombstone only with the same identity: another epoch is refused; fresh,
 *     with any epoch, after a drop).  Its destructive
 *     writes are fenced on the leader key and on the pool's generation in the same txn.
 *
 * Faults, all nondeterministic: crashes (a restart forgets everything), SIGSTOP (any
 * process may sit still while time runs), keepalives processed late or lost, answers
 * lost (client timeouts), mark writes that time out on the client and are applied later,
 * after newer ones, or never, clock skew and rollback per holder, lease expiry,
 * operator delete / drop / re-create with another epoch, and a deposed operator leader.
 *
 * Abstractions: one datacenter and one worker ID (the protocol is per key; other keys
 * only add contention), one ID per millisecond per holder (the sequence is local to one
 * holder), time in small integer ticks up to TMAX, an ID's value is its timestamp minus
 * the pool's epoch (layouts are not modelled: an epoch change stands for any identity
 * change).  Monotonic time is the real time `now`; a holder's wall clock is
 * now + skew[holder].
 *
 * Invariants (assertions):
 *   - no two holders (claim incarnations, named by their lease) issue the same ID value
 *     within one life of the pool; a life ends when its data is legitimately dropped
 *     (a dropped pool's IDs are gone by request; what is checked is that no old holder
 *     can issue once the drop has happened, since that would collide in the new life);
 *   - no ID is issued at or after its holder's lease deadline (invariant 3 of DESIGN.md).
 *   The first is watched with a monitor that nondeterministically picks one issued ID
 *   and checks every later issue of the same value.
 *
 * Configurations (compile-time): the whole model at once is too large to search
 * exhaustively in CI, so tests/models/test_spin.py checks it in four slices, each
 * exhaustively within its bounds:
 *   delays     -DNO_OPERATOR            delayed/reordered/lost mark writes, lost answers,
 *                                       one clock jump, pauses
 *   waits      -DNO_OPERATOR -DNO_DELAY -DWAITS   blocking waits between the lease check
 *                                       and the clock read, one clock jump, pauses
 *   lifecycle  -DNO_DELAY -DCLOCK_EVENTS=0        operator delete / drop / re-create with
 *                                       another epoch, a deposed leader, pauses
 *   restarts   -DNO_OPERATOR -DNO_DELAY -DCLOCK_EVENTS=0 -DMAXLEASE=3 -DRESTARTS=1
 *                                       a crash (restart with no memory) or a graceful
 *                                       stop, a re-claim by the same process, pauses
 * The bounds used there: TMAX=4, TTL=2, MARGIN=0, MAXSKEW=1, and MAXLEASE=2, RESTARTS=0
 * except in `restarts`.
 * MARGIN is 0 because the model has one time base: the real margin covers the rate
 * difference between the sidecar's monotonic clock and etcd's, which is not modelled;
 * a wall-clock skew of one tick then already lets an unprotected successor collide.
 *
 * Bug switches (spin -DBUG_X), each brings back one known bug:
 *   BUG_DROP_LIVE     drop-data deletes marks, config and claims at once, under live holders
 *   BUG_NO_IDENTITY   a re-created pool may take another epoch over its tombstone, marks
 *                     are bare milliseconds without the pool's identity, claims and
 *                     holders do not check the pool's generation, sidecars never re-read it
 *   BUG_STALE_LEADER  the operator's drop is not fenced on the leader key nor the generation
 *   BUG_NO_RECHECK    the lease is checked before a blocking wait, not after it
 *   BUG_MARK_DOWN     mark writes are plain puts (a late write lowers the mark) and a new
 *                     holder's floor is the stored mark, not max(mark, own last)
 */

#ifndef BUG_DROP_LIVE
#define BUG_DROP_LIVE 0
#endif
#ifndef BUG_NO_IDENTITY
#define BUG_NO_IDENTITY 0
#endif
#ifndef BUG_STALE_LEADER
#define BUG_STALE_LEADER 0
#endif
#ifndef BUG_NO_RECHECK
#define BUG_NO_RECHECK 0
#endif
#ifndef BUG_MARK_DOWN
#define BUG_MARK_DOWN 0
#endif

/* Bounds (time in ticks; the real defaults are TTL 10 s, margin 2 s, tick 2.5 s). */
#ifndef TMAX
#define TMAX 9            /* real time runs 0..TMAX */
#endif
#ifndef TTL
#define TTL 2             /* lease TTL */
#endif
#ifndef MARGIN
#define MARGIN 1          /* deadline = keepalive sent + TTL - MARGIN */
#endif
#define HORIZON (TTL + 1) /* the mark runs TTL + tick ahead of the wall clock */
#ifndef MAXSKEW
#define MAXSKEW 1         /* a holder's wall clock reads now + 0..MAXSKEW */
#endif
#ifndef CLOCK_EVENTS
#define CLOCK_EVENTS 1    /* clock jumps (forward or back) in a run */
#endif
#define NH 2              /* holder processes */
#ifndef MAXLEASE
#define MAXLEASE 4        /* leases granted in a run (claim incarnations) */
#endif
#ifndef RESTARTS
#define RESTARTS 2        /* crashes and graceful stops in a run */
#endif
#ifndef EPOCH2
#define EPOCH2 2          /* the other epoch a re-created pool may take */
#endif

/* ---- etcd ---------------------------------------------------------------------- */
byte now;                         /* real (and monotonic) time */
byte held[2];                     /* the lease each holder process uses (0: none) */
byte t;                           /* scratch */
byte lease_exp[MAXLEASE + 1];     /* lease l is alive iff lease_exp[l] > now */
byte nleases;                     /* leases granted so far (ids 1..nleases) */
byte claim;                       /* the lease carried by workers/0/0; 0: absent */
bool mark_set;                    /* clock/0/0 exists */
short mark;                       /* its value: an ID value (ts - epoch), or bare ms with BUG_NO_IDENTITY */
byte mark_lease;                  /* the lease that wrote it */
bool cfg;                         /* config key present */
byte cfg_gen;                     /* its generation (identity) */
byte cfg_epoch;
bool tomb;                        /* tombstone present (pool deleted, data kept) */
byte tomb_gen;
byte gens = 1;                    /* generations handed out (etcd create revisions) */
byte leader = 1;                  /* which operator holds the leader key */

/* mark writes in flight, one slot per holder: sent, timed out on the client, not applied */
bool pend[NH];
short pend_v[NH];
byte pend_lease[NH];
bool pend_lower[NH];              /* a graceful-stop lowering (compare on the stored value) */
short pend_expect[NH];

/* ---- the world ------------------------------------------------------------------- */
byte skew[NH];                    /* wall = now + skew */
byte clock_events;
byte restarts;
byte life;                        /* ghost: bumped when a deleted pool's data is dropped */
byte ops_delete;                  /* operator budget: one delete or drop, one re-create */
byte ops_create;
bool deposed;

/* ---- the monitor --------------------------------------------------------------------- */
byte mon_lease;                   /* 0: not watching yet */
short mon_value;

#define WALL(h) (now + skew[h])
#define lease held[me]                /* in a holder: the lease of its current claim round */

#if BUG_NO_IDENTITY
#define SAME_POOL true
#else
#define SAME_POOL (cfg && cfg_gen == gen)
#endif
#if BUG_NO_RECHECK
#define RECHECK true
#else
#define RECHECK (now < deadline)
#endif

#if BUG_NO_IDENTITY
#define TO_MARK(abs, ep)   (abs)
#define FROM_MARK(m, ep)   (m)
#else
#define TO_MARK(abs, ep)   ((abs) - (ep))
#define FROM_MARK(m, ep)   ((m) + (ep))
#endif

/* Apply a mark write: the txn compares the claim's lease, then puts. */
inline apply_write(wv, wl, wlower, wexpect, result) {
  if
  :: claim == wl && claim != 0 ->
#if BUG_MARK_DOWN
     mark = wv; mark_set = true; mark_lease = wl; result = true
#else
     if
     :: wlower ->
        /* the release may lower only a mark written under its own lease */
        if
        :: mark_set && mark_lease == wl -> mark = wv; result = true
        :: else -> result = false
        fi
     :: else ->
        /* raising never lowers: a CAS loop on mod_revision keeps the higher value */
        if
        :: !mark_set || wv > mark -> mark = wv; mark_set = true; mark_lease = wl
        :: else -> skip
        fi;
        result = true
     fi
#endif
  :: else -> result = false
  fi
}

/* Expire leases whose TTL ran out; a claim goes with its lease. */
inline expire() {
  i = 1;
  do
  :: i <= MAXLEASE ->
     if
     :: lease_exp[i] != 0 && lease_exp[i] <= now ->
        lease_exp[i] = 0;
        if :: claim == i -> claim = 0 :: else -> skip fi
     :: else -> skip
     fi;
     i++
  :: else -> break
  od;
  i = 0
}

inline forget_pending(h) {
  pend[h] = false; pend_v[h] = 0; pend_lease[h] = 0; pend_lower[h] = false; pend_expect[h] = 0
}

inline apply_pending(h) {
  apply_write(pend_v[h], pend_lease[h], pend_lower[h], pend_expect[h], r);
  forget_pending(h); r = false
}

/* Canonical states: a lease that no claim, holder or write refers to can do nothing but
 * lapse, and a delayed write whose lease no longer carries the claim can never apply
 * (a lease that lost the claim never carries it again), so both are forgotten at once.
 * (Forgetting a lease early only lets a drop proceed earlier: more behaviours.) */
inline tidy() {
  if :: pend[0] && claim != pend_lease[0] -> forget_pending(0) :: else -> skip fi;
  if :: pend[1] && claim != pend_lease[1] -> forget_pending(1) :: else -> skip fi;
  t = 1;
  do
  :: t <= MAXLEASE ->
     if
     :: lease_exp[t] != 0 && claim != t && held[0] != t && held[1] != t -> lease_exp[t] = 0
     :: else -> skip
     fi;
     t++
  :: else -> break
  od;
  t = 0
}

/* Time, clocks and etcd's background work. */
active proctype World() {
  byte i, h;
  bool r;
end:
  do
  :: atomic { now < TMAX -> now++; expire(); tidy() }
  :: atomic { clock_events < CLOCK_EVENTS ->
       clock_events++;
       select(h : 0 .. NH - 1);
       select(i : 0 .. MAXSKEW);
       skew[h] = i; i = 0; h = 0 }
  :: atomic { pend[0] -> apply_pending(0) }   /* a write that timed out on the client */
  :: atomic { pend[1] -> apply_pending(1) }   /* is applied now, after newer ones */
  :: atomic { pend[0] -> forget_pending(0) }  /* or it is never applied */
  :: atomic { pend[1] -> forget_pending(1) }
  :: atomic { !deposed -> deposed = true; leader = 3 - leader }
  od
}

#define LAPSED(l) (snapshot < l || lease_exp[l] == 0)

/* The operator (two replicas; the leader key decides which may act). */
proctype Operator(byte me) {
  byte gen, snapshot;
end:
  do
  :: /* delete, keeping the data: the config becomes a tombstone */
     atomic { ops_delete == 0 && leader == me && cfg ->
       ops_delete++;
       tomb = true; tomb_gen = cfg_gen; cfg = false; cfg_gen = 0;
       claim = 0; tidy() }
  :: /* delete and drop the data */
#if BUG_DROP_LIVE
     atomic { ops_delete == 0 && leader == me && cfg ->
       ops_delete++;
       mark_set = false; mark = 0; mark_lease = 0;
       cfg = false; cfg_gen = 0; claim = 0; tidy();
       life++; mon_lease = 0; mon_value = 0 }
#else
     /* 1. fence: tombstone and delete the claims, in one txn on the leader key */
     atomic { ops_delete == 0 && leader == me && cfg ->
       ops_delete++;
       gen = cfg_gen; tomb = true; tomb_gen = cfg_gen; cfg = false; cfg_gen = 0;
       claim = 0; snapshot = nleases; tidy() };
     /* 2. wait until no claim is left and every lease has lapsed */
     atomic { claim == 0 && LAPSED(1) && LAPSED(2) && LAPSED(3) && LAPSED(4) -> skip };
     /* 3. drop: delete the marks and the tombstone, fenced on the leader key and on
      *    the tombstone still being this generation's */
     atomic {
       if
#if BUG_STALE_LEADER
       :: true ->
#else
       :: leader == me && tomb && tomb_gen == gen ->
#endif
          /* the pool is really gone (ghost): its life ends here */
          if
          :: !cfg && tomb && tomb_gen == gen ->
             life++; mon_lease = 0; mon_value = 0
          :: else -> skip
          fi;
          mark_set = false; mark = 0; mark_lease = 0; tomb = false; tomb_gen = 0
       :: else -> skip
       fi;
       gen = 0; snapshot = 0 }
#endif
  :: /* (re-)create the pool: over a tombstone only with its identity (another epoch is
      * refused), fresh after a drop with any epoch */
     atomic { ops_create == 0 && leader == me && !cfg ->
       ops_create++;
#if BUG_NO_IDENTITY
       if :: cfg_epoch = 0 :: cfg_epoch = EPOCH2 fi;
#else
       if :: tomb -> skip :: else -> if :: cfg_epoch = 0 :: cfg_epoch = EPOCH2 fi fi;
#endif
       gens++; cfg = true; cfg_gen = gens;
       tomb = false; tomb_gen = 0 }
  od
}

/* A keepalive, processed by etcd when sent (a later processing only keeps the lease
 * longer), its answer maybe lost.  ka: 1 renewed and answered, 2 lease not found,
 * 0 no answer (a client timeout, whether or not etcd renewed). */
inline keepalive() {
  sent = now;
  if
  :: lease_exp[lease] > now -> lease_exp[lease] = now + TTL; if :: ka = 1 :: ka = 0 fi
  :: else -> if :: ka = 2 :: ka = 0 fi
  fi
}

/* A fenced mark write; `answered` false: the client timed out, and the write is either
 * lost or still in flight (applied later by World, maybe after newer writes). */
inline write_mark(mv, mlower, mexpect) {
  if
  :: apply_write(mv, lease, mlower, mexpect, ok); answered = true
#ifndef NO_DELAY
  :: !pend[me] ->
     pend[me] = true; pend_v[me] = mv; pend_lease[me] = lease;
     pend_lower[me] = mlower; pend_expect[me] = mexpect;
     answered = false; ok = false
#endif
  :: answered = false; ok = false
  fi
}

/* Record an issued ID; the asserted invariants. */
inline issue(ts) {
  assert(now < deadline);               /* invariant 3: never after the deadline */
  value = ts - epoch;
  if
  :: mon_lease == 0 -> if :: mon_lease = lease; mon_value = value :: skip fi
  :: mon_lease != 0 && mon_value == value ->
     assert(mon_lease == lease)         /* invariant 1: no two holders issue one ID */
  :: else -> skip
  fi;
  last = ts; value = 0
}

/* A restarted process remembers nothing. */
inline forget_all() {
  lease = 0; gen = 0; epoch = 0; deadline = 0; last = 0; ownlast = -1; allow = 0
}

#define CAN_ISSUE (WALL(me) > last && WALL(me) <= allow && WALL(me) >= epoch)

proctype Holder(byte me) {
  byte gen, epoch, deadline, sent, ka;
  short last, ownlast, allow, floor, v, value;
  bool ok, answered;

  ownlast = -1;
restart:
  /* a new process reads the pool's config (load_pool_config) */
end_config:
  atomic { cfg -> gen = cfg_gen; epoch = cfg_epoch };

grant:
  atomic { nleases < MAXLEASE -> nleases++; lease = nleases; lease_exp[lease] = now + TTL };

  /* claim: create-if-absent, attached to the lease (and to the pool's generation) */
end_claim:
  do
  :: atomic { claim == 0 && lease_exp[lease] > now && SAME_POOL -> claim = lease; break }
  :: atomic { lease_exp[lease] <= now -> lease = 0; goto grant }
#if !BUG_NO_IDENTITY
  :: atomic { !cfg || cfg_gen != gen -> lease_exp[lease] = 0; forget_all(); goto restart }
#endif
  od;

  /* start serving: read the mark, floor = max(mark, own last), persist a mark ahead of
   * the clock (fenced), keepalive, and serve past the floor until the deadline */
  atomic {
    if
    :: mark_set -> floor = FROM_MARK(mark, epoch)
    :: else -> floor = -1
    fi;
#if !BUG_MARK_DOWN
    if :: ownlast > floor -> floor = ownlast :: else -> skip fi;
#endif
    if :: WALL(me) > floor -> v = WALL(me) + HORIZON :: else -> v = floor + HORIZON fi;
    write_mark(TO_MARK(v, epoch), false, 0);
    if
    :: answered && ok ->
       allow = v; keepalive();
       if
       :: ka == 1 -> deadline = sent + TTL - MARGIN; last = floor
       :: else -> skip
       fi
    :: else -> ka = 0
    fi;
    floor = 0; v = 0; sent = 0; ok = false; answered = false;
    if :: ka == 1 -> ka = 0 :: else -> ka = 0; goto lost fi
  };

  do
  :: /* issue one ID: the lease check and the clock read are one step */
     atomic { now < deadline && CAN_ISSUE -> issue(WALL(me)) }
#ifdef WAITS
  :: /* the lease is checked, then the generator blocks (rollback wait, next millisecond) */
     atomic { now < deadline && !CAN_ISSUE -> skip };
     atomic { if :: CAN_ISSUE && RECHECK -> issue(WALL(me)) :: else -> skip fi }
#endif
  :: /* tick: renew the lease */
     atomic {
#if !BUG_NO_IDENTITY
       if :: cfg && cfg_gen == gen -> skip :: else -> goto stop fi;  /* the pool went away */
#endif
       keepalive();
       if
       :: ka == 2 -> ka = 0; sent = 0; goto lost
       :: ka == 0 -> sent = 0
       :: ka == 1 -> skip
       fi };
     /* ... then advance the mark, fenced on the claim */
     atomic {
       if
       :: ka == 1 ->
          v = WALL(me) + HORIZON;
          if :: allow > v -> v = allow :: else -> skip fi;
          if :: last > v -> v = last :: else -> skip fi;
          write_mark(TO_MARK(v, epoch), false, 0);
          if
          :: answered && ok -> allow = v; deadline = sent + TTL - MARGIN
          :: else -> skip
          fi;
          v = 0; sent = 0; ka = 0;
          if :: ok || !answered -> ok = false; answered = false :: else -> goto lost fi
       :: else -> skip
       fi }
  :: /* crash: the process is gone, a new one starts with no memory */
     atomic { restarts < RESTARTS -> restarts++; forget_all(); goto restart }
  :: /* SIGTERM */
     atomic { restarts < RESTARTS -> restarts++; goto stop }
  od;

stop:
  /* graceful stop: stop issuing, lower the mark to the last timestamp, revoke */
  atomic {
    deadline = 0;
    write_mark(TO_MARK(last, epoch), true, TO_MARK(allow, epoch));
    ok = false; answered = false;
    lease_exp[lease] = 0; if :: claim == lease -> claim = 0 :: else -> skip fi;
    forget_all(); tidy();
    goto restart };

lost:
  /* the lease or the claim is lost: stop, remember our last timestamp, revoke, re-claim */
  atomic {
    deadline = 0; ownlast = last; last = 0; allow = 0;
    if
    :: lease_exp[lease] = 0; if :: claim == lease -> claim = 0 :: else -> skip fi
    :: skip      /* the revoke fails; the lease lapses by its TTL */
    fi;
    lease = 0; tidy();
    goto grant }
}

init {
  atomic {
    cfg = true; cfg_gen = 1; cfg_epoch = 0;
#ifndef NO_OPERATOR
    run Operator(1); run Operator(2);
#endif
    run Holder(0); run Holder(1)
  }
}
