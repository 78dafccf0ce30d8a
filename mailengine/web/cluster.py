"""The cluster on the dashboard: shared or falling back, the nodes seen,
the suspensions and throttles every node applies ([cluster] redis_url, or the
supervisor of [server] workers; issue 13)."""

from __future__ import annotations

from mailengine.queue.actions import plural
from mailengine.queue.shape import format_age as age
from mailengine.scheduler.grants import ClusterView, SharedReaction
from mailengine.web.render import NONE, Html, el, grid, local_time, num, tr


def _held_text(r: SharedReaction, now: float) -> str:
    if r.suspended_until > now:
        return f"suspended until {local_time(r.suspended_until, '%H:%M:%S')}"
    return f"throttled (cut to {r.throttle_rate:g}/min, ramping back to {r.throttle_ceiling:g})"


def cluster_card(view: ClusterView | None, now: float) -> Html | None:
    if view is None:
        return None
    own = view.node.split(", ")  # a box of workers: each is a node of its own
    this = f"this node is {view.node}" if len(own) == 1 else f"this box's workers are {view.node}"
    if view.is_shared and "://" not in view.store:  # the supervisor of one box's workers
        state = el("span", "SHARED", class_="pill")
        text = (
            f"Caps are granted by {view.store} to {plural(view.node_count, 'worker')}: "
            "connection leases, message-rate tokens, room under the hourly cap and "
            "reactions; each worker sends its share of the bandwidth cap."
        )
    elif view.is_shared:
        state = el("span", "SHARED", class_="pill")
        text = (
            f"Caps are shared through Redis at {view.store} by "
            f"{plural(view.node_count, 'node')}; {this}."
        )
    else:
        state = el("span", "FALLBACK", class_="pill bad")
        text = (
            f"Redis at {view.store} cannot be reached since {local_time(view.since)} "
            f"({view.problem}): each cap is this node's share, 1/{view.node_count} of it, "
            "until Redis answers again."
        )
    nodes = grid(
        ["Node", "Last seen", "#leases", "Mode"],
        [
            tr(
                n.name + (" (this node)" if n.name in own else ""),
                f"{age(max(0.0, now - n.last_seen))} ago",
                num(str(n.leases)),
                n.mode or NONE,
            )
            for n in view.nodes
        ],
        "No node seen yet.",
    )
    held = grid(
        ["Destination", "Held", "By node", "Reply"],
        [
            tr(
                r.domain,
                _held_text(r, now),
                r.node or NONE,
                el("td", r.suspended_by or r.throttle_reply, class_="error-text"),
            )
            for r in view.reactions
        ],
        "No destination is suspended or throttled across the cluster.",
    )
    return el(
        "section",
        el("h2", "Cluster", state),
        el("p", text, id="cluster-state"),
        nodes,
        el("h3", "Throttle state shared by every node"),
        held,
        class_="card",
        id="cluster",
    )
