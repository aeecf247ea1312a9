// msightd status page: everything is rendered by the server; this only keeps it fresh.
// - <img data-refresh>: reloaded every THUMBNAIL_MS (a new query string defeats caches);
// - elements with an id and data-live: swapped every LIVE_MS for the same ones from this page's ?live=1
//   variant (node table, health: cheap), and with data-live-slow every SLOW_MS from the whole page
//   (timelines: they read the catalogs);
// - <a data-play>: plays its href in the #player <video> instead of leaving the page.
"use strict";
const THUMBNAIL_MS = 3000;
const LIVE_MS = 5000;
const SLOW_MS = 60000;

function refreshThumbnails() {
  for (const img of document.querySelectorAll("img[data-refresh]")) {
    const base = img.dataset.base || img.getAttribute("src").split("?")[0];
    img.dataset.base = base;
    const next = new Image();
    next.onload = () => { img.src = next.src; img.classList.remove("missing"); };
    next.onerror = () => img.classList.add("missing");
    next.src = base + "?t=" + Date.now();
  }
}

// Swap the elements matching `selector` (each has an id) for the same ones in a fresh copy from `url`.
async function swapFrom(url, selector) {
  if (!document.querySelector(selector)) return;
  try {
    const answer = await fetch(url, { cache: "no-store" });
    if (!answer.ok) return;
    const fresh = new DOMParser().parseFromString(await answer.text(), "text/html");
    for (const old of document.querySelectorAll(selector)) {
      const replacement = old.id && fresh.getElementById(old.id);
      if (replacement) old.replaceWith(document.importNode(replacement, true));
    }
  } catch (error) {
    console.warn("msightd: refresh failed", error);
  }
}

function liveUrl() {
  const url = new URL(location.href);
  url.searchParams.set("live", "1");
  return url.toString();
}

function playInline(event) {
  const link = event.target.closest("a[data-play]");
  const player = document.getElementById("player");
  if (!link || !player) return;
  event.preventDefault();
  player.src = link.getAttribute("href");
  player.play().catch(() => {});
  for (const row of document.querySelectorAll("tr.playing")) row.classList.remove("playing");
  link.closest("tr")?.classList.add("playing");
}

document.addEventListener("click", playInline);
for (const img of document.querySelectorAll("img[data-refresh]")) {
  img.addEventListener("error", () => img.classList.add("missing"));
}
setInterval(refreshThumbnails, THUMBNAIL_MS);
setInterval(() => swapFrom(liveUrl(), "[data-live]"), LIVE_MS);
setInterval(() => swapFrom(location.href, "[data-live-slow]"), SLOW_MS);
