// The dashboard's shell: a hash router (#/overview, #/keys, #/keys/<id>, #/logs?…, #/logs/<id>, #/miners),
// the navigation, logout, and a refresh timer for the pages that follow live traffic.

import { api, clear, h, toast } from "./util.js";
import * as keys from "./keys.js";
import * as logs from "./logs.js";
import * as miners from "./miners.js";
import * as overview from "./overview.js";

const PAGES = { overview, keys, logs, miners };
const REFRESH_SECONDS = 10;
let timer = null;
let generation = 0;

function parse() {
  const [path, query] = (location.hash.replace(/^#\/?/, "") || "overview").split("?");
  const [page, ...rest] = path.split("/");
  return { page: PAGES[page] ? page : "overview", arg: rest.length ? decodeURIComponent(rest.join("/")) : null,
    params: new URLSearchParams(query || "") };
}

async function show() {
  const route = parse();
  const mine = ++generation;
  clearInterval(timer);
  document.querySelectorAll("#nav a").forEach((a) => a.classList.toggle("active", a.dataset.page === route.page));
  const view = document.getElementById("view");
  const module = PAGES[route.page];
  // Each render fills a page of its own, shown only if no newer navigation started meanwhile: a slow
  // answer for the page just left must not overwrite the one now open.
  const render = async (first) => {
    const page = h("div", { class: "page" });
    try {
      await module.render(page, route, first);
      if (mine === generation) view.replaceChildren(page);
    } catch (error) {
      if (mine !== generation) return;
      if (first) clear(view, h("div", { class: "banner bad" }, `Could not load this page: ${error.message}`));
      else toast(error.message, true);
    }
  };
  if (mine === generation) await render(true);
  if (module.live && mine === generation) {
    timer = setInterval(() => { if (!document.hidden) render(false); }, REFRESH_SECONDS * 1000);
  }
}

document.getElementById("logout").addEventListener("click", async () => {
  try {
    await api("POST", "/dashboard/logout");
  } finally {
    location.href = "/dashboard/login";
  }
});

window.addEventListener("hashchange", show);
show();
