#!/usr/bin/env python3
"""The web app in a real browser (headless Chromium through chromedriver, Selenium, axe-core).

Two real nodes on loopback: A (org jenv, the coordinator, with the 2021 programme) and B (org
politie), replicating over plain HTTP; each serves its web app on a loopback port. Checks the
issue's list: login ok/fail, viewer cannot edit, editor only what the org owns, an edit on A shows
on B's open page within 2 s without a reload, a conflict made on both nodes resolved in the
browser closes on both, a CSRF-less POST is refused, the session cookie is refused after logout,
0 axe-core violations on every page in both languages, and a keyboard-only edit. Screenshots go
to .build/ui-screenshots/. Bounded: every wait has a deadline; the whole run takes about a minute.

Usage: scripts/ui_test.py [path to the progsyncd binary]   (default .build/debug/progsyncd)
"""
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import Select, WebDriverWait
from axe_selenium_python import Axe

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
PROGSYNCD = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, ".build/debug/progsyncd")
SHOTS = os.path.join(ROOT, ".build/ui-screenshots")
PASSED, FAILED = [], []


def check(name, condition, detail=""):
    (PASSED if condition else FAILED).append(name)
    print(("ok   " if condition else "FAIL ") + name + ("" if condition or not detail else ": " + str(detail)), flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class UnixHTTP(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("localhost", timeout=30)
        self.path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self.path)


class Node:
    def __init__(self, root, name, org):
        self.name, self.org = name, org
        self.folder = os.path.join(root, name)
        self.peer_port, self.ui_port = free_port(), free_port()
        out = subprocess.run([PROGSYNCD, "init", "--data-dir", self.folder, "--org", org, "--name", name],
                             capture_output=True, text=True, timeout=60, check=True).stdout
        identity = json.load(open(os.path.join(self.folder, "identity.json")))
        self.id, self.public_key = identity["id"], identity["publicKey"]
        self.process = None
        self.url = "http://127.0.0.1:%d" % self.ui_port

    @property
    def socket_path(self):
        return os.path.join(self.folder, "progsync.sock")

    def start(self, nodes, sample, extra_env=None):
        orgs = {}
        for n in nodes:
            orgs.setdefault(n.org, []).append({"id": n.id, "name": n.name, "publicKey": n.public_key,
                                               "address": "http://127.0.0.1:%d" % n.peer_port})
        registry = {"coordinators": ["jenv"], "orgs": [{"code": o, "nodes": orgs[o]} for o in sorted(orgs)]}
        json.dump(registry, open(os.path.join(self.folder, "registry.json"), "w"), indent=1)
        env = {k: v for k, v in os.environ.items() if not k.startswith("PROGSYNC_")}
        env.update({"PROGSYNC_PEERS_LISTEN": "127.0.0.1:%d" % self.peer_port, "PROGSYNC_PEERS_PLAIN_HTTP": "true",
                    "PROGSYNC_UI_LISTEN": "127.0.0.1:%d" % self.ui_port, "PROGSYNC_UI_PLAIN_HTTP": "true",
                    "PROGSYNC_RECONCILE_SCHEDULE": "off"})
        env.update(extra_env or {})
        log = open(os.path.join(self.folder, "daemon.log"), "a")
        self.process = subprocess.Popen([PROGSYNCD, "--data-dir", self.folder] + ([] if sample else ["--empty"]),
                                        env=env, stdout=log, stderr=log)
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                if self.api("GET", "/v1/status")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError("node %s did not start; see %s/daemon.log" % (self.name, self.folder))

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def api(self, method, path, body=None):
        c = UnixHTTP(self.socket_path)
        c.request(method, path, body=None if body is None else json.dumps(body),
                  headers={"Content-Type": "application/json"})
        r = c.getresponse()
        data = r.read()
        c.close()
        try:
            return r.status, json.loads(data)
        except ValueError:
            return r.status, None

    def add_user(self, name, role, password):
        status, answer = self.api("POST", "/v1/users", {"name": name, "role": role, "password": password})
        assert status == 201, (status, answer)


def browser():
    options = webdriver.ChromeOptions()
    for flag in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1000", "--lang=nl"]:
        options.add_argument(flag)
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    driver = webdriver.Chrome(service=Service(executable_path=shutil.which("chromedriver") or "/usr/bin/chromedriver"),
                              options=options)
    driver.set_page_load_timeout(30)
    return driver


def login(driver, node, name, password):
    driver.get(node.url + "/login")
    driver.find_element(By.ID, "name").send_keys(name)
    driver.find_element(By.ID, "password").send_keys(password)
    # The answer comes after a bcrypt check (a quarter second, more on a busy machine).
    submit(driver, driver.find_element(By.CSS_SELECTOR, "form.login button[type=submit]"))


def submit(driver, button):
    """Clicks a form's button and waits for the next page: never read the page being left."""
    button.click()
    WebDriverWait(driver, 20, poll_frequency=0.05).until(lambda _: left_document(button))


def left_document(element):
    """True once the element's page is gone. Chromium reports an element caught mid-navigation either as
    stale or as a node that 'does not belong to the document'; both mean the same here."""
    try:
        element.is_enabled()
        return False
    except StaleElementReferenceException:
        return True
    except WebDriverException as error:
        if "does not belong to the document" in str(error) or "No node with given id" in str(error):
            return True
        raise


def status_cell_text(driver, record):
    try:
        cells = driver.find_elements(By.CSS_SELECTOR, "td[data-field=status][data-record='%s'] .label" % record)
        return cells[0].text if cells else None
    except StaleElementReferenceException:
        return None  # the live update replaced the cell between finding and reading it


def axe_check(driver, label):
    axe = Axe(driver)
    axe.inject()
    results = axe.run()
    violations = results["violations"]
    check("axe: 0 violations on " + label, not violations,
          "; ".join("%s (%d)" % (v["id"], len(v["nodes"])) for v in violations))


def shot(driver, name):
    os.makedirs(SHOTS, exist_ok=True)
    driver.save_screenshot(os.path.join(SHOTS, name + ".png"))


def main():
    started = time.time()
    root = tempfile.mkdtemp(prefix="progsync-ui-")
    a, b = Node(root, "a", "jenv"), Node(root, "b", "politie")
    drivers = []
    try:
        a.start([a, b], sample=True)
        b.start([a, b], sample=False)
        a.add_user("anna", "editor", "anna's long password")
        a.add_user("vera", "viewer", "vera's long password")
        b.add_user("piet", "editor", "piet's long password")
        deadline = time.time() + 60
        while time.time() < deadline and b.api("GET", "/v1/status")[1]["records"]["total"] < 161:
            time.sleep(0.3)
        check("node B received the programme", b.api("GET", "/v1/status")[1]["records"]["total"] == 161)

        da = browser()
        drivers.append(da)
        # Login: a wrong password says so; the right one shows the programme.
        login(da, a, "anna", "wrong password")
        check("failed login is refused with a message", "klopt niet" in da.page_source)
        shot(da, "login-failed")
        axe_check(da, "login (nl)")
        login(da, a, "anna", "anna's long password")
        check("login shows the overview", "Legenda" in da.page_source and "Programma" in da.title)
        shot(da, "overview-nl")

        # Every page, both languages, 0 axe violations.
        activity = "al1.r01.a01"
        pages = ["/", "/ours", "/activities/" + activity, "/conflicts", "/held", "/partners", "/reports"]
        for lang in ["nl", "en"]:
            for page in pages:
                da.get(a.url + page + "?lang=" + lang)
                axe_check(da, "%s (%s)" % (page, lang))
            da.get(a.url + "/reports/programme.html?lang=" + lang)
            axe_check(da, "programme report (%s)" % lang)
        da.get(a.url + "/?lang=en")
        shot(da, "overview-en")
        da.get(a.url + "/activities/" + activity + "?lang=nl")
        shot(da, "activity-nl")

        # A viewer reads but has no form.
        dv = browser()
        drivers.append(dv)
        login(dv, a, "vera", "vera's long password")
        dv.get(a.url + "/activities/" + activity)
        check("viewer cannot edit", "u bent lezer" in dv.page_source and not dv.find_elements(By.CSS_SELECTOR, "form.edit"))

        # B's editor (politie) edits only politie's records; others say whose they are.
        db = browser()
        drivers.append(db)
        login(db, b, "piet", "piet's long password")
        db.get(b.url + "/activities/" + activity)
        check("editor of another org sees why a record is read only",
              "eigendom van jenv" in db.page_source and not db.find_elements(By.CSS_SELECTOR, "form.edit"))
        shot(db, "activity-read-only")

        # Live: B's open overview shows A's edit within 2 s, without a reload.
        db.get(b.url + "/")
        db.execute_script("window.__notReloaded = true;")
        time.sleep(0.5)  # the EventSource connects
        da.get(a.url + "/activities/" + activity)
        current = Select(da.find_element(By.ID, "e-status")).first_selected_option.get_attribute("value")
        target = "delayed" if current != "delayed" else "completed"
        Select(da.find_element(By.ID, "e-status")).select_by_value(target)
        clicked = time.time()
        da.find_element(By.CSS_SELECTOR, "form.edit button[type=submit]").click()
        label = {"delayed": "In uitvoering maar met vertraging", "completed": "Voltooid"}[target]
        try:
            WebDriverWait(db, 2, poll_frequency=0.05).until(lambda d: status_cell_text(d, activity) == label)
            seen = time.time() - clicked
        except TimeoutException:
            seen = None
        check("edit on A appears on B's open page within 2 s", seen is not None, status_cell_text(db, activity))
        check("B's page was not reloaded", db.execute_script("return window.__notReloaded === true;"))
        if seen is not None:
            print("web: edit->partner page %.0f ms (browser, two nodes)" % (seen * 1000))
        shot(db, "live-update-on-b")

        # A conflict made on both nodes (A is offline while B edits), resolved in A's browser.
        record = next(r["id"] for r in b.api("GET", "/v1/records?kind=activity&owner=politie")[1]["records"])
        a.stop()
        db.get(b.url + "/activities/" + record)
        Select(db.find_element(By.ID, "e-status")).select_by_value("not-started")
        db.find_element(By.CSS_SELECTOR, "form.edit button[type=submit]").click()
        WebDriverWait(db, 10).until(lambda d: "Opgeslagen" in d.page_source)
        b.stop()
        a.start([a, b], sample=True)
        login(da, a, "anna", "anna's long password")
        da.get(a.url + "/activities/" + record)
        Select(da.find_element(By.ID, "e-status")).select_by_value("on-track")
        da.find_element(By.CSS_SELECTOR, "form.edit button[type=submit]").click()
        WebDriverWait(da, 10).until(lambda d: "Opgeslagen" in d.page_source)
        b.start([a, b], sample=False)
        conflict_on = lambda n: any(c["record"] == record for c in n.api("GET", "/v1/conflicts")[1]["conflicts"])
        deadline = time.time() + 20
        while time.time() < deadline and not (conflict_on(a) and conflict_on(b)):
            time.sleep(0.2)
        check("conflict exists on both nodes", conflict_on(a) and conflict_on(b))
        da.get(a.url + "/activities/" + record)
        versions = da.find_elements(By.CSS_SELECTOR, ".side-by-side .version")
        check("conflict shown side by side", len(versions) >= 2)
        shot(da, "conflict-side-by-side")
        axe_check(da, "activity with a conflict (nl)")
        versions[-1].find_element(By.CSS_SELECTOR, "button").click()
        deadline = time.time() + 10
        while time.time() < deadline and (conflict_on(a) or conflict_on(b)):
            time.sleep(0.2)
        check("resolved in the browser, closed on all nodes", not conflict_on(a) and not conflict_on(b))

        # Keyboard only: tab through the overview to an activity, change its status, save.
        login(da, a, "anna", "anna's long password")
        da.get(a.url + "/?lang=nl")
        body = da.find_element(By.TAG_NAME, "body")
        body.send_keys(Keys.TAB)
        target_href = "/activities/al1.r01.a02"
        reached = False
        for _ in range(400):
            active = da.switch_to.active_element
            if (active.get_attribute("href") or "").endswith(target_href):
                reached = True
                break
            active.send_keys(Keys.TAB)
        check("keyboard: tab reaches an activity link", reached)
        if reached:
            da.switch_to.active_element.send_keys(Keys.ENTER)
            WebDriverWait(da, 5).until(lambda d: d.find_elements(By.ID, "e-status"))
            found = False
            for _ in range(200):
                active = da.switch_to.active_element
                if active.get_attribute("id") == "e-status":
                    found = True
                    break
                active.send_keys(Keys.TAB)
            check("keyboard: tab reaches the status field", found)
            if found:
                before = Select(da.find_element(By.ID, "e-status")).first_selected_option.get_attribute("value")
                da.switch_to.active_element.send_keys(Keys.ARROW_UP if before in ("not-applicable", "") else Keys.ARROW_DOWN)
                da.switch_to.active_element.send_keys(Keys.TAB)   # explanation
                da.switch_to.active_element.send_keys(Keys.TAB)   # save
                da.switch_to.active_element.send_keys(Keys.ENTER)
                WebDriverWait(da, 5).until(lambda d: "Opgeslagen" in d.page_source)
                after = Select(da.find_element(By.ID, "e-status")).first_selected_option.get_attribute("value")
                check("keyboard: status saved without a mouse", after != before, (before, after))
                shot(da, "keyboard-saved")

        # Someone else changes the status I am editing: the open form says so before I save, and
        # the save is refused rather than replacing their value.
        record = "al1.r02.a01"
        da.get(a.url + "/activities/" + record)
        mine = Select(da.find_element(By.ID, "e-status"))
        current = mine.first_selected_option.get_attribute("value")
        theirs = "delayed" if current != "delayed" else "completed"
        status, _ = a.api("PATCH", "/v1/records/" + record, {"status": theirs})
        try:
            WebDriverWait(da, 5, poll_frequency=0.05).until(
                lambda d: d.find_element(By.CSS_SELECTOR, "form.edit .warn").text.strip() != "")
            warned = da.find_element(By.CSS_SELECTOR, "form.edit .warn").text
        except TimeoutException:
            warned = ""
        check("an open form is told when someone else changed its field", status == 200 and warned != "", (status, warned))
        Select(da.find_element(By.ID, "e-status")).select_by_value("not-started" if theirs != "not-started" else "ongoing")
        submit(da, da.find_element(By.CSS_SELECTOR, "form.edit button[type=submit]"))
        kept = a.api("GET", "/v1/records/" + record)[1]["fields"]["status"]
        check("the stale save does not replace their value", kept == theirs, kept)
        shot(da, "changed-meanwhile")

        # A POST without a CSRF token is refused, even with a valid session cookie.
        cookie = da.get_cookie("progsync_session")["value"]
        req = urllib.request.Request(a.url + "/activities/al1.r01.a02", data=b"status=completed", method="POST",
                                     headers={"Cookie": "progsync_session=" + cookie,
                                              "Content-Type": "application/x-www-form-urlencoded"})
        try:
            code = urllib.request.urlopen(req, timeout=10).status
        except urllib.error.HTTPError as e:
            code = e.code
        check("CSRF-less POST refused", code == 403, code)

        # After logout the old cookie no longer works.
        submit(da, da.find_element(By.CSS_SELECTOR, "form.logout button"))
        req = urllib.request.Request(a.url + "/", headers={"Cookie": "progsync_session=" + cookie})
        opener = urllib.request.build_opener(NoRedirect())
        try:
            code = opener.open(req, timeout=10).status
        except urllib.error.HTTPError as e:
            code = e.code
        check("session cookie refused after logout", code == 303, code)

        # After the idle timeout (2 s here; 30 min by default) the session is gone too.
        a.stop()
        a.start([a, b], sample=True, extra_env={"PROGSYNC_UI_IDLE_TIMEOUT_SECONDS": "2"})
        login(da, a, "anna", "anna's long password")
        check("signed in again", "Legenda" in da.page_source)
        time.sleep(3)
        da.get(a.url + "/")
        check("session refused after idle expiry", "/login" in da.current_url, da.current_url)
    finally:
        for d in drivers:
            try:
                d.quit()
            except Exception:
                pass
        a.stop()
        b.stop()
        if not FAILED:
            shutil.rmtree(root, ignore_errors=True)
        else:
            print("node folders kept in", root)
    print("ui: %.0f s" % (time.time() - started))
    print("ui: %d passed, %d failed" % (len(PASSED), len(FAILED)))
    return 1 if FAILED else 0


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


if __name__ == "__main__":
    sys.exit(main())
