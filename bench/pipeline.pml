/* The `pipeline` spec (spec/specs/pipeline.py) in Promela, for a side-by-side run with SPIN.

   S stages pass M microbatches through S+1 FIFO channels of capacity C.  Every put, take and
   stage step is one transition: the source's put and the sink's take are each one d_step, a stage
   loops through ready (the i < M guard), receive, compute, send and count.  No process has an exit
   step: each rests at an `end` label once finished, so the all-finished state is a valid end and
   any other state without successors is an invalid end state (a deadlock).

   Unreduced (gcc -DNOREDUCE) at the defaults SPIN stores 646,157 states and 3,441,072
   transitions, as lockstep does; with SPIN's partial-order reduction it stores 24,605.
   Override the bounds with spin -DS=3 -DM=2 -DC=1 -a pipeline.pml. */
#ifndef S
#define S 6
#endif
#ifndef M
#define M 4
#endif
#ifndef C
#define C 2
#endif

chan q[S + 1] = [C] of { byte };

active proctype Source() {      /* _pid 0 */
    byte n = 0;
end:
    do
    :: d_step { n < M && nfull(q[0]) -> q[0]!n; n++ }      /* put */
    od
}

active [S] proctype Stage() {   /* _pid 1..S is stage _pid-1: it reads q[_pid-1], writes q[_pid] */
    byte i = 0, v, c;
end:
    do
    :: i < M ->                 /* ready */
        q[_pid - 1]?v;          /* receive */
        c = v;                  /* compute: records the value */
        q[_pid]!c;              /* send */
        i++                     /* count */
    od
}

active proctype Sink() {        /* _pid S+1 */
    byte n = 0, v;
end:
    do
    :: d_step { nempty(q[S]) -> q[S]?v; assert(v == n); n++ }   /* take, in order */
    od
}
