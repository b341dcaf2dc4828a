// The report of `tendril iomodels` (iomodels_report.hpp): plain text, Markdown and SVG, all
// written by hand so that the command needs nothing beyond the standard library.
#include "iomodels_report.hpp"

#include <algorithm>
#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <map>
#include <string>
#include <vector>

namespace tendril::app {
namespace {

[[gnu::format(printf, 1, 2)]] std::string format(const char* fmt, ...) {
  char buf[128];
  va_list ap;
  va_start(ap, fmt);
  std::vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  return buf;
}

// 1234567 -> "1,234,567".
std::string thousands(double v) {
  std::string digits = format("%.0f", v);
  std::string out;
  const std::size_t n = digits.size();
  for (std::size_t i = 0; i < n; ++i) {
    out += digits[i];
    if (digits[0] != '-' && (n - i - 1) % 3 == 0 && i + 1 < n) out += ',';
  }
  return out;
}

// A rate: "10,000", or "0.5" below one message a second.
std::string rate_text(double v) { return v >= 1 ? thousands(v) : format("%g", v); }

std::string micros(double v) { return format(v < 100 ? "%.1f" : "%.0f", v); }

// The figures of a row, "—" where it has none.
struct cells {
  std::string rate, p50, p99, p999, cpu_per_msg, srv_cpu, gen_cpu, threads, rss, note;
};

cells cells_of(const iomodels_row& r) {
  cells c;
  const std::string none = "—";
  c.note = r.note;
  if (!r.measured) {
    c.rate = c.p50 = c.p99 = c.p999 = c.cpu_per_msg = c.srv_cpu = c.gen_cpu = c.threads = c.rss =
        none;
    return c;
  }
  const auto& l = r.load;
  c.rate = thousands(l.msgs_per_s);
  c.p50 = l.messages ? micros(l.p50_us) : none;
  c.p99 = l.messages ? micros(l.p99_us) : none;
  c.p999 = l.messages ? micros(l.p999_us) : none;
  c.cpu_per_msg = l.messages ? format("%.2f", l.server_cpu_us_per_msg) : none;
  // The server was measured when its status was read (a server idle over a short window
  // may have used 0 clock ticks: that is 0%, not a missing figure).
  c.srv_cpu = l.server_threads > 0 ? format("%.0f", l.server_cpu_pct) : none;
  c.gen_cpu = format("%.0f", l.client_cpu_pct);
  c.threads = l.server_threads ? std::to_string(l.server_threads) : none;
  c.rss = l.server_rss_kib ? format("%.1f", static_cast<double>(l.server_rss_kib) / 1024.0) : none;
  return c;
}

// Display width of UTF-8 text: code points, which is right for what the tables hold.
std::size_t width(const std::string& s) {
  std::size_t n = 0;
  for (unsigned char ch : s)
    if ((ch & 0xC0) != 0x80) ++n;
  return n;
}

std::string pad(const std::string& s, std::size_t w, bool right) {
  const std::size_t n = width(s);
  if (n >= w) return s;
  return right ? std::string(w - n, ' ') + s : s + std::string(w - n, ' ');
}

std::string xml_escape(const std::string& s) {
  std::string out;
  for (char ch : s) {
    switch (ch) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      default:
        out += ch;
    }
  }
  return out;
}

// The smallest of 1, 2, 2.5, 5 times a power of ten that is at least v.
double nice_ceiling(double v) {
  if (!(v > 0)) return 1;
  const double p = std::pow(10.0, std::floor(std::log10(v)));
  for (double f : {1.0, 2.0, 2.5, 5.0, 10.0})
    if (f * p >= v * (1 - 1e-9)) return f * p;
  return 10 * p;
}

std::string short_number(double v) {
  if (v >= 1e6) return format(std::fmod(v, 1e6) == 0 ? "%.0fM" : "%.1fM", v / 1e6);
  if (v >= 1e3) return format(std::fmod(v, 1e3) == 0 ? "%.0fk" : "%.1fk", v / 1e3);
  return format(v == std::floor(v) ? "%.0f" : "%.2g", v);
}

// Colours told apart by most eyes (Tableau 10, then darker ones).
const char* const palette[] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
                               "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
                               "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173"};

}  // namespace

std::string iomodels_table(const std::vector<iomodels_row>& rows) {
  const std::vector<std::string> head = {"model",     "conns",    "msgs/s",     "p50 µs",
                                         "p99 µs",    "p99.9 µs", "srv µs/msg", "srv CPU %",
                                         "gen CPU %", "threads",  "RSS MiB",    "note"};
  std::vector<std::vector<std::string>> body;
  for (const auto& r : rows) {
    cells c = cells_of(r);
    body.push_back({r.model, std::to_string(r.connections), c.rate, c.p50, c.p99, c.p999,
                    c.cpu_per_msg, c.srv_cpu, c.gen_cpu, c.threads, c.rss, c.note});
  }
  std::vector<std::size_t> w(head.size());
  for (std::size_t i = 0; i < head.size(); ++i) {
    w[i] = width(head[i]);
    for (const auto& b : body) w[i] = std::max(w[i], width(b[i]));
  }
  auto line = [&](const std::vector<std::string>& cols) {
    std::string s;
    for (std::size_t i = 0; i < cols.size(); ++i) {
      const bool last = i + 1 == cols.size();
      s += last ? cols[i] : pad(cols[i], w[i], i > 0) + "  ";
    }
    while (!s.empty() && s.back() == ' ') s.pop_back();
    return s + "\n";
  };
  std::string out = line(head);
  for (const auto& b : body) out += line(b);
  return out;
}

std::string iomodels_markdown(const std::vector<iomodels_row>& rows, const iomodels_setup& s,
                              const std::string& svg_name) {
  std::string out = "# tendril iomodels\n\n";
  out +=
      "The upper-casing echo service, one server process per I/O model (`tendril serve-model "
      "NAME`), measured by the lab's load generator (`tendril load`): " +
      std::to_string(s.message_size) + "-byte messages, one in flight per connection " +
      (s.rate > 0 ? "and " + rate_text(s.rate) +
                        " messages per second offered over all the connections (each "
                        "connection paced), "
                  : std::string("(closed loop: the server saturated), ")) +
      format("%g", s.warmup_s) + " s of warm-up then " + format("%g", s.seconds) +
      " s measured per row.\n\n";
  out += "| | |\n|---|---|\n";
  out += "| CPU | " + s.cpu + " |\n";
  std::string cpus = std::to_string(s.cpus) + " online";
  if (s.usable_cpus > 0 && s.usable_cpus != s.cpus) {
    cpus += ", " + std::to_string(s.usable_cpus) + " usable by the run";
  }
  cpus += s.pinned ? " (server pinned to CPU " + std::to_string(s.server_cpu) +
                         ", load generator to CPU " + std::to_string(s.load_cpu) + ")"
                   : " (no pinning: server and load generator share one CPU)";
  out += "| CPUs | " + cpus + " |\n";
  out += "| kernel | " + s.kernel + " |\n";
  out += "| date | " + s.date + " |\n";
  out += "| load average before, after | " + s.load_before + "; " + s.load_after + " |\n\n";
  out +=
      "| model | connections | messages/s | p50 µs | p99 µs | p99.9 µs | server CPU µs/msg "
      "| server CPU % | load generator CPU % | threads | RSS MiB | note |\n";
  out += "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n";
  for (const auto& r : rows) {
    cells c = cells_of(r);
    out += "| " + r.model + " | " + std::to_string(r.connections) + " | " + c.rate + " | " + c.p50 +
           " | " + c.p99 + " | " + c.p999 + " | " + c.cpu_per_msg + " | " + c.srv_cpu + " | " +
           c.gen_cpu + " | " + c.threads + " | " + c.rss + " | " + c.note + " |\n";
  }
  out +=
      "\nServer CPU µs/msg is the server's user + system time over the window (all its "
      "threads, from /proc/PID/stat) divided by the messages echoed in it; server CPU % is "
      "the same time over the window's length (100 is one CPU kept busy); threads and RSS "
      "are read from /proc/PID/status at the end of the window, every connection open.\n\n";
  out +=
      "![messages per second and server CPU per message against connections](" + svg_name + ")\n";
  return out;
}

std::string iomodels_svg(const std::vector<iomodels_row>& rows,
                         const std::vector<std::string>& models, const iomodels_setup& s) {
  // Layout: two plotting areas side by side, the legend under them.
  const double pw = 380, ph = 260, top = 84, lefts[2] = {80, 570};
  const int legend_columns = 4;
  const double legend_top = top + ph + 70, legend_row = 20, legend_col = 225;
  const auto legend_rows = static_cast<int>((models.size() + legend_columns - 1) / legend_columns);
  const double w = 980, h = legend_top + legend_rows * legend_row + 20;

  std::vector<std::size_t> levels;
  for (const auto& r : rows)
    if (std::find(levels.begin(), levels.end(), r.connections) == levels.end())
      levels.push_back(r.connections);
  std::sort(levels.begin(), levels.end());
  double lo = levels.empty() ? 0 : std::log10(static_cast<double>(levels.front()));
  double hi = levels.empty() ? 1 : std::log10(static_cast<double>(levels.back()));
  if (hi - lo < 1e-9) {
    lo -= 0.5;
    hi += 0.5;
  }
  auto x_of = [&](int panel, std::size_t n) {
    return lefts[panel] + (std::log10(static_cast<double>(n)) - lo) / (hi - lo) * pw;
  };

  struct metric {
    const char* key;
    const char* title;
    double (*value)(const lab::load_result&);
  };
  const metric metrics[2] = {
      {"msgs_per_s", "messages per second (higher is better)",
       [](const lab::load_result& l) { return l.msgs_per_s; }},
      {"server_cpu_us_per_msg", "server CPU µs per message (lower is better)",
       [](const lab::load_result& l) { return l.server_cpu_us_per_msg; }},
  };
  auto plotted = [](const iomodels_row& r, int m) {
    return r.measured && r.load.messages > 0 && (m == 0 || r.load.server_cpu_us_per_msg > 0);
  };

  std::string out = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n";
  out += format("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\"", w) +
         format(" height=\"%.0f\"", h) + format(" viewBox=\"0 0 %.0f", w) +
         format(" %.0f\" font-family=\"sans-serif\" font-size=\"12\">\n", h);
  const std::string title =
      "tendril iomodels: upper-case echo, " + std::to_string(s.message_size) +
      "-byte messages, one in flight per connection" +
      (s.rate > 0 ? ", " + rate_text(s.rate) + " messages/s offered" : std::string());
  out += "<title>" + xml_escape(title) + "</title>\n";
  out += "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
  out += format("<text x=\"%.0f\" y=\"24\" text-anchor=\"middle\" font-size=\"15\">", w / 2) +
         xml_escape(title) + "</text>\n";
  if (!s.cpu.empty() || !s.date.empty())
    out +=
        format("<text x=\"%.0f\" y=\"42\" text-anchor=\"middle\" fill=\"#555\">", w / 2) +
        xml_escape(s.cpu + ", " + std::to_string(s.cpus) + " CPUs, " + s.kernel + ", " + s.date) +
        "</text>\n";

  for (int m = 0; m < 2; ++m) {
    const double left = lefts[m];
    double top_value = 0;
    for (const auto& r : rows)
      if (plotted(r, m)) top_value = std::max(top_value, metrics[m].value(r.load));
    top_value = nice_ceiling(top_value);
    auto y_of = [&](double v) { return top + ph - v / top_value * ph; };

    out += std::string("<g class=\"panel\" data-metric=\"") + metrics[m].key + "\">\n";
    out += format("<text x=\"%.1f\"", left + pw / 2) + format(" y=\"%.0f\"", top - 12) +
           " text-anchor=\"middle\" font-weight=\"bold\">" + xml_escape(metrics[m].title) +
           "</text>\n";
    for (int i = 0; i <= 5; ++i) {
      const double v = top_value * i / 5, y = y_of(v);
      out += format("<line x1=\"%.1f\"", left) + format(" y1=\"%.1f\"", y) +
             format(" x2=\"%.1f\"", left + pw) + format(" y2=\"%.1f\"", y) + " stroke=\"#ddd\"/>\n";
      out += format("<text x=\"%.1f\"", left - 6) + format(" y=\"%.1f\"", y + 4) +
             " text-anchor=\"end\">" + short_number(v) + "</text>\n";
    }
    for (std::size_t n : levels) {
      const double x = x_of(m, n);
      out += format("<line x1=\"%.1f\"", x) + format(" y1=\"%.1f\"", top) +
             format(" x2=\"%.1f\"", x) + format(" y2=\"%.1f\"", top + ph) + " stroke=\"#eee\"/>\n";
      out += format("<text x=\"%.1f\"", x) + format(" y=\"%.1f\"", top + ph + 16) +
             " text-anchor=\"middle\">" + std::to_string(n) + "</text>\n";
    }
    out += format("<rect x=\"%.1f\"", left) + format(" y=\"%.1f\"", top) +
           format(" width=\"%.1f\"", pw) + format(" height=\"%.1f\"", ph) +
           " fill=\"none\" stroke=\"#333\"/>\n";
    out += format("<text x=\"%.1f\"", left + pw / 2) + format(" y=\"%.1f\"", top + ph + 34) +
           " text-anchor=\"middle\">connections (log scale)</text>\n";
    for (std::size_t k = 0; k < models.size(); ++k) {
      const char* colour = palette[k % std::size(palette)];
      const bool ours = models[k].rfind("tendril", 0) == 0;
      std::string points, dots;
      for (std::size_t n : levels) {
        for (const auto& r : rows) {
          if (r.model != models[k] || r.connections != n || !plotted(r, m)) continue;
          const double x = x_of(m, n), y = y_of(metrics[m].value(r.load));
          points += (points.empty() ? "" : " ") + format("%.1f", x) + "," + format("%.1f", y);
          dots += format("<circle cx=\"%.1f\"", x) + format(" cy=\"%.1f\"", y) +
                  " r=\"3\" fill=\"" + colour + "\"/>\n";
        }
      }
      out += "<polyline class=\"series\" data-model=\"" + xml_escape(models[k]) +
             "\" fill=\"none\" stroke=\"" + colour + "\" stroke-width=\"" + (ours ? "3" : "1.5") +
             "\"" + (ours ? "" : " stroke-dasharray=\"6 3\"") + " points=\"" + points + "\"/>\n";
      out += dots;
    }
    out += "</g>\n";
  }

  out += "<g class=\"legend\">\n";
  for (std::size_t k = 0; k < models.size(); ++k) {
    const char* colour = palette[k % std::size(palette)];
    const bool ours = models[k].rfind("tendril", 0) == 0;
    bool any = false;
    for (const auto& r : rows) any = any || (r.model == models[k] && plotted(r, 0));
    const double x = lefts[0] + static_cast<double>(k % legend_columns) * legend_col;
    const double y = legend_top + static_cast<double>(k / legend_columns) * legend_row;
    out += format("<line x1=\"%.1f\"", x) + format(" y1=\"%.1f\"", y - 4) +
           format(" x2=\"%.1f\"", x + 24) + format(" y2=\"%.1f\"", y - 4) + " stroke=\"" + colour +
           "\" stroke-width=\"" + (ours ? "3" : "1.5") + "\"" +
           (ours ? "" : " stroke-dasharray=\"6 3\"") + "/>\n";
    out += format("<text x=\"%.1f\"", x + 30) + format(" y=\"%.1f\"", y) + ">" +
           xml_escape(models[k]) + (any ? "" : " (not measured)") + "</text>\n";
  }
  out += "</g>\n</svg>\n";
  return out;
}

}  // namespace tendril::app
